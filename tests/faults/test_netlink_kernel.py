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


def test_proxy_entries_over_netlink_in_a_namespace() -> None:
    # Not pytest's tmp_path: its parent is root's alone, and `nobody` runs a script from here.
    with tempfile.TemporaryDirectory(prefix="v6nl-", dir="/tmp") as tmp:
        Path(tmp).chmod(0o755)
        (Path(tmp) / "ns.py").write_text(SCRIPT)
        (Path(tmp) / "unprivileged.py").write_text(UNPRIVILEGED)
        done = subprocess.run(
            [
                "unshare",
                "--net",
                sys.executable,
                f"{tmp}/ns.py",
                str(SRC),
                f"{tmp}/unprivileged.py",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
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
