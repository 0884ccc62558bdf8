"""Issue 23 part 3 and issue 22 part 1 on the default bookworm lab, asserted from the LAN: an
address someone else holds is left unclaimed with its holder named (sync exits 10), of two
v6gen hosts the first keeps an address, and the announcement moves a LAN host's neighbour
entry to this host (a moved container) and resolves an INCOMPLETE one; watch's fast path
claims at once and withdraws when the probe is answered.

One lab for all of it (the time allowance), with a second host on its LAN (lanhosts.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .image import IMAGE
from .labhost import BUSYBOX_PING, REPO, Lab, poll
from .lanhosts import mac, neighbour, second_host
from .watchproc import NotifySocket, WatchProc

pytestmark = pytest.mark.lab

SEED = Path(__file__).resolve().parent / "compose" / "seed.yml"
PROBE = "2001:db8::a:71a5"
LATE = "2001:db8::a:71a6"  # a second container, started while a LAN host already asks for it
HELD = "2001:db8::a:71a4"  # held by the LAN host while watch's fast path claims it


def sync(lab: Lab) -> tuple[int, str]:
    res = lab.v6gen("sync")
    return res.returncode, res.stdout + res.stderr


def test_held_addresses_first_holder_and_announcements(lab: Lab) -> None:
    lan = lab.lan()
    hostb = second_host(lab)
    lab.compose_up(SEED)
    uplink_mac, lan_mac, b_mac = mac(lab.host, "uplink0"), mac(lan, "br0"), mac(hostb, "hb0")

    # 1. A LAN host holds the container's address; the Docker host has no entry for it.
    lan.run(f"ip addr add {PROBE}/128 dev br0 nodad")
    assert lab.run(f"ip -6 neigh show {PROBE} dev uplink0").stdout.strip() == ""
    code, out = sync(lab)
    assert code == 10, out
    assert lan_mac in out and "another address" in out
    assert PROBE not in lab.proxy_entries()
    assert lan_mac in lab.read("/var/lib/v6gen/claims.json")
    assert not lab.path("/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf").exists()

    # 2. Another v6gen host holds it (a proxy entry; its kernel answers with Override clear).
    lan.run(f"ip addr del {PROBE}/128 dev br0")
    hostb.run(f"ip -6 neigh add proxy {PROBE} dev hb0")
    code, out = sync(lab)
    assert code == 10 and b_mac in out, out
    assert PROBE not in lab.proxy_entries()

    # 3. The container moves here from host b. The LAN host knows it at b (REACHABLE, and kept
    # so for a minute: without an announcement it would not ask again before then).
    lan.run("sysctl -qw net.ipv6.neigh.br0.base_reachable_time_ms=120000")
    lan.run(f"{BUSYBOX_PING} -6 -c 1 -W 1 {PROBE}", check=False)
    assert neighbour(lan, PROBE) == (b_mac, "REACHABLE")
    hostb.run(f"ip -6 neigh del proxy {PROBE} dev hb0")
    code, out = sync(lab)
    assert code == 0, out
    assert PROBE in lab.proxy_entries()
    assert poll(lambda: neighbour(lan, PROBE)[0] == uplink_mac, 30), neighbour(lan, PROBE)
    assert not lab.path("/var/lib/v6gen/claims.json").exists()
    assert lan.run(f"{BUSYBOX_PING} -6 -c 1 -W 5 {PROBE}", check=False).returncode == 0

    # 4. Now this host is the first holder: host b, asking as v6gen does, hears it and would
    # step back (v6gen's own probe code, run in host b's namespace).
    heard = hostb.run(
        [
            "env", f"PYTHONPATH={REPO / 'src'}", "python3", "-c",
            "import sys; from ipaddress import IPv6Address as A;"
            " from v6gen import claims; from v6gen.adapters.ndpsock import RawNdp;"
            f" print(RawNdp().probe('hb0', {{A('{PROBE}')}}, claims.PROBE_WAIT))",
        ]
    ).stdout  # fmt: skip
    assert uplink_mac in heard, heard

    # 5. A LAN host asks for an address before its container runs: INCOMPLETE, and it would
    # ask again only after a minute; the announcement answers it.
    lan.run(
        "sysctl -qw net.ipv6.neigh.br0.retrans_time_ms=60000 net.ipv6.neigh.br0.mcast_solicit=2"
    )
    ping = subprocess.Popen(
        [*lan.prefix(), *BUSYBOX_PING.split(), "-6", "-c", "1", "-W", "50", LATE],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert poll(lambda: neighbour(lan, LATE)[1] == "INCOMPLETE", 30), neighbour(lan, LATE)
        lab.run(f"docker run -d --name late --network lab_probe-network --ip6 {LATE} {IMAGE}"
                " sleep infinity")  # fmt: skip
        code, out = sync(lab)
        assert code == 0 and re.search(rf"add\s+{LATE}", out), out
        assert poll(lambda: neighbour(lan, LATE)[0] == uplink_mac, 30), neighbour(lan, LATE)
        assert ping.wait(timeout=60) == 0, ping.stdout.read() if ping.stdout else ""
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()

    # 6. watch's fast path, the same claim: the entry at once, then withdrawn, the holder named.
    lan.run(f"ip addr add {HELD}/128 dev br0 nodad")
    with NotifySocket() as notify, WatchProc(lab, notify=notify) as watch:
        watch.wait_ready()
        lab.run(f"docker run -d --name held --network lab_probe-network --ip6 {HELD} {IMAGE}"
                " sleep infinity")  # fmt: skip
        assert watch.wait_for(rf"withdrew {HELD} on uplink0: {lan_mac} answers", 30), watch.text()
        assert watch.wait_for(rf"skipped {HELD} .*{lan_mac}", 30), watch.text()
        assert HELD not in lab.proxy_entries()
        assert lan_mac in lab.read("/var/lib/v6gen/claims.json")
