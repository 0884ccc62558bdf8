"""Issue 22 part 1 in the hook: entries put back after a flap are announced with libndp's
ndptool where it is installed, once per flap (`routable`), in the background; heard on the
veth's other end, as a LAN host would."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from v6gen import ndp

from .conftest import PEER, UPLINK, Lab
from .test_hook_script import ADDRS, managed

pytestmark = pytest.mark.skipif(
    shutil.which("ndptool") is None, reason="ndptool not installed (Debian: libndp-tools)"
)

# Prints each NA heard on the peer as "<target> <override> <mac>", after "ready".
LISTEN = f"""
import select, socket, sys, time
sys.path.insert(0, {str(ndp.__file__).rsplit("/v6gen/", 1)[0]!r})
from v6gen import ndp
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"{PEER}")
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while (left := end - time.monotonic()) > 0:
    if select.select([s], [], [], left)[0]:
        heard = ndp.parse_answer(s.recv(2048))
        if heard is not None:
            print(heard.target, heard.override, heard.who, flush=True)
"""


def heard_while(lab: Lab, seconds: float, action: object) -> list[str]:
    listener = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns, sys.executable, "-c", LISTEN, str(seconds)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert listener.stdout is not None and listener.stdout.readline() == "ready\n"
    assert callable(action)
    action()
    out, _ = listener.communicate(timeout=seconds + 30)
    return out.splitlines()


def test_routable_announces_what_it_restored_and_carrier_does_not(lab: Lab) -> None:
    # The link-local address must be usable at once (DAD would hold it ~1 s after the flap).
    lab.set_sysctl(f"net/ipv6/conf/{UPLINK}/accept_dad", "0")
    managed(lab)
    lab.flap()
    mac = lab.ip("-json", "link", "show", "dev", UPLINK).split('"address":"')[1][:17]

    quiet = heard_while(lab, 1.5, lambda: lab.run_hook(state="carrier"))
    assert quiet == []
    runs = []
    heard = heard_while(lab, 5.0, lambda: runs.append(lab.run_hook(state="routable")))
    (run,) = runs
    assert run.rc == 0 and run.line["n"] == "3"
    assert "announcing them with ndptool" in run.line["notes"]
    assert sorted(heard) == sorted(f"{a} True {mac}" for a in ADDRS)
