"""adapters/netlink.py against the real kernel, in a private network namespace (root only):
what it lists is what `ip -6 neigh show proxy` lists, adds are idempotent, a delete of a gone
entry or of a gone interface's is no failure, an add on a missing interface or without
CAP_NET_ADMIN fails with v6gen's error and hint, and nobody else's entry is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a network namespace)")

SRC = Path(__file__).resolve().parents[2] / "src"
SCRIPT = r"""
import json, subprocess, sys
from ipaddress import IPv6Address
from v6gen.adapters.kernel import IpKernel
from v6gen.errors import KernelError

def sh(cmd):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout

def listed():
    rows = json.loads(sh("ip -6 -json neigh show proxy") or "[]")
    return sorted([r["dev"], r["dst"]] for r in rows)

def error(call):
    try:
        call()
    except KernelError as exc:
        return [exc.message, exc.hint]
    return None

sh("ip link add name up0 type veth peer name peer0 && ip link set up0 up")
sh("ip link add name other0 type veth peer name other1")
sh("ip -6 neigh add proxy 2001:db8::99 dev other0")  # someone else's
k = IpKernel()
add = [("up0", IPv6Address(f"2001:db8::{i:x}")) for i in range(1, 601)]
k.change_proxy(add, ())
k.change_proxy(add[:10], ())
out = {"after_add": sorted([d, str(a)] for d, a in k.proxy_entries()), "ip_after_add": listed()}
gone = ("up0", IPv6Address("2001:db8::7777"))  # never there
k.change_proxy([("up0", IPv6Address("2001:db8::1000"))], [*add[:5], gone])
out["after_change"] = sorted([d, str(a)] for d, a in k.proxy_entries())
out["ip_after_change"] = listed()
missing = [("nosuch0", IPv6Address("2001:db8::5"))]
out["missing_dev"] = error(lambda: k.change_proxy(missing, ()))
out["delete_on_missing_dev"] = error(lambda: k.change_proxy((), missing))
sh("ip link del up0")
out["after_link_del"] = sorted([d, str(a)] for d, a in k.proxy_entries())
sh("ip link add name up1 type veth peer name peer1")
sh("ip -6 neigh add proxy 2001:db8::5 dev up1")
# Debian's python3: the test's own may live where nobody may read (a venv under /root).
out["unprivileged"] = json.loads(sh(
    "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "
    f"/usr/bin/python3 {sys.argv[2]} {sys.argv[1]}"
))
print(json.dumps(out))
"""
UNPRIVILEGED = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ipaddress import IPv6Address
from v6gen.adapters.netlink import ProxyTable
from v6gen.errors import KernelError
table = ProxyTable()
listed = len(table.entries())
try:
    table.change((), [("up1", IPv6Address("2001:db8::5"))])
    error = None
except KernelError as exc:
    error = [exc.message, exc.hint]
print(json.dumps([listed, error]))
"""


def _in_netns(scripts: dict[str, str]) -> dict[str, Any]:
    """Run the first script in a fresh network namespace, its argv the others' paths after
    src/; its JSON output. Not pytest's tmp_path: its parent is root's alone, and `nobody`
    runs a script from here."""
    with tempfile.TemporaryDirectory(prefix="v6nl-", dir="/tmp") as tmp:
        Path(tmp).chmod(0o755)
        for name, text in scripts.items():
            (Path(tmp) / name).write_text(text)
        first, *rest = (f"{tmp}/{name}" for name in scripts)
        done = subprocess.run(
            ["unshare", "--net", sys.executable, first, str(SRC), *rest],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )
    assert done.returncode == 0, done.stderr
    return cast(dict[str, Any], json.loads(done.stdout))


def test_proxy_entries_over_netlink_in_a_namespace() -> None:
    out = _in_netns({"ns.py": SCRIPT, "unprivileged.py": UNPRIVILEGED})
    added = [["up0", f"2001:db8::{i:x}"] for i in range(1, 601)]
    theirs = ["other0", "2001:db8::99"]
    assert out["after_add"] == out["ip_after_add"] == sorted([*added, theirs])
    changed = sorted([*added[5:], ["up0", "2001:db8::1000"], theirs])
    assert out["after_change"] == out["ip_after_change"] == changed
    assert out["missing_dev"] == [
        "cannot add the proxy entry 2001:db8::5 dev nosuch0: No such device",
        "the interface is gone: check `ip link`, then run `v6gen sync` again",
    ]
    assert out["delete_on_missing_dev"] is None
    assert out["after_link_del"] == [theirs]  # the kernel flushed up0's with the link
    assert out["unprivileged"] == [
        2,  # listing needs no privilege: up1's and the other one
        [
            "cannot delete the proxy entry 2001:db8::5 dev up1: Operation not permitted",
            "changing proxy entries needs CAP_NET_ADMIN: run v6gen as root",
        ],
    ]


DAD_SCRIPT = r"""
import json, subprocess
from ipaddress import IPv6Network
from v6gen.adapters.kernel import IpKernel

def sh(cmd):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True).stdout

def addresses(dev):
    rows = json.loads(sh(f"ip -6 -json addr show dev {dev}"))
    return {a["local"]: sorted(k for k in ("tentative", "nodad", "dadfailed") if a.get(k))
            for r in rows for a in r["addr_info"]}

sh("sysctl -qw net.ipv6.conf.default.accept_dad=1")
# As Docker 20.10 makes a network: a bridge without ports, up, its gateway added (tentative).
sh("ip link add name br0 type bridge && ip link set br0 up")
sh("ip addr add 2001:db8::20:1/112 dev br0 && ip addr add fe80::1/64 dev br0")
sh("ip link add name other0 type bridge && ip link set other0 up")
sh("ip addr add 2001:db8::30:1/112 dev other0")
# The first container: a port comes up, the carrier with it, and DAD starts.
sh("ip link add name veth0 type veth peer name veth1 && ip link set veth0 master br0")
sh("ip link set veth1 up && ip link set veth0 up")
out = {"before": addresses("br0")}
k = IpKernel()
out["lines"] = k.end_dad([IPv6Network("2001:db8::20:0/112"), IPv6Network("2001:db8::40:0/112")])
out["after"] = addresses("br0")
out["other"] = addresses("other0")
dad = "sysctl -n net.ipv6.conf.{}.accept_dad"
out["accept_dad"] = [sh(dad.format(d)).strip() for d in ("br0", "other0")]
out["again"] = k.end_dad([IPv6Network("2001:db8::20:0/112")])
print(json.dumps(out))
"""


def test_dad_ended_on_a_served_bridge_in_a_namespace() -> None:
    out = _in_netns({"dad.py": DAD_SCRIPT})
    assert out["before"]["2001:db8::20:1"] == ["tentative"]
    assert out["after"]["2001:db8::20:1"] == ["nodad"]
    assert out["after"]["fe80::1"] == ["nodad"]
    assert all(flags == ["nodad"] or "tentative" not in flags for flags in out["after"].values())
    assert "br0: accept_dad=0" in out["lines"]
    assert "br0: 2001:db8::20:1 no longer tentative" in out["lines"]
    # Not a bridge of a served subnet: left as it was.
    assert out["other"]["2001:db8::30:1"] == ["tentative"]
    assert out["accept_dad"] == ["0", "1"]
    assert out["again"] == []  # settled: nothing more to do
