"""Issue 23 part 1: `v6gen watch` follows the uplink's prefixes, with no Docker event.

Two bookworm labs (networkd 252, dockerd 20.10 with its default firewall, the dispatcher): radvd
in the LAN advertising a second, short-lived prefix that is deprecated, then runs out, then comes
back; and a static uplink whose .network is renumbered and reloaded while a container removal's
sync runs, then put back. Each waits for what watch says and for what the LAN reaches, with
generous time-outs; the times are bench rows (bench/prefixes.py).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from ipaddress import IPv6Address, IPv6Network

import pytest

from .conftest import SRC_ONLY, MakeLab
from .image import IMAGE
from .labhost import Lab, poll
from .topology import UPLINKS
from .watchproc import (
    NotifySocket,
    WatchProc,
    create_container,
    create_network,
    global_v6,
    remove,
    start,
)

pytestmark = pytest.mark.lab

DROPIN = "/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf"
HOOK = "/etc/networkd-dispatcher/routable.d/50-v6gen"
# The lab's radvd advertises 2001:db8::/64 with radvd's default lifetimes (topology.radvd_conf):
# it stays. The containers live in P1, which is first advertised with a short valid lifetime:
# a prefix first seen with a long one would, by RFC 4862's two-hour rule, outlive the test.
P1, P2 = "2001:db8:1::", "2001:db8:2::"
LIFETIME = 12  # seconds: long enough for the LAN's pings while deprecated, short to run out


def radvd(*prefixes: str) -> str:
    """radvd's config for the LAN: the lab's own prefix and `prefixes` ("2001:db8:1:: 12 0"
    is that /64 with valid lifetime 12 s and preferred 0: deprecated)."""
    lines = [
        "interface eth0 {",
        "  AdvSendAdvert on; MinRtrAdvInterval 3; MaxRtrAdvInterval 4; AdvDefaultLifetime 600;",
        "  prefix 2001:db8::/64 { AdvOnLink on; AdvAutonomous on; };",
    ]
    for spec in prefixes:
        prefix, valid, preferred = spec.split()
        lines.append(
            f"  prefix {prefix}/64 {{ AdvOnLink on; AdvAutonomous on; "
            f"AdvValidLifetime {valid}; AdvPreferredLifetime {preferred}; }};"
        )
    return "\n".join([*lines, "};", ""])


def advertise(lab: Lab, *prefixes: str) -> None:
    """Rewrite radvd's config and make it reread it (SIGHUP), as an admin or a CPE would."""
    (lab.workdir / "radvd-uplink0.conf").write_text(radvd(*prefixes))
    lab.lan().run("kill -HUP $(cat /run/lab/radvd-uplink0.pid)")


def uplink_has(lab: Lab, prefix: str, flag: str = "") -> bool:
    """Whether uplink0 holds an address in `prefix`/64 (whose line says `flag`)."""
    out = lab.run("ip -6 -o addr show dev uplink0 scope global").stdout
    net = IPv6Network(f"{prefix}/64")
    return any(
        IPv6Address(line.split()[3].split("/")[0]) in net and flag in line
        for line in out.splitlines()
    )


def proxied(lab: Lab, address: str) -> bool:
    dropin = lab.path(DROPIN)
    in_dropin = dropin.exists() and f"={address}\n" in dropin.read_text()
    return in_dropin and address in lab.proxy_entries() and lab.path(HOOK).exists()


@pytest.fixture
def start_watch(make_lab: MakeLab) -> Iterator[Callable[[Lab], WatchProc]]:
    """start_watch(lab): `v6gen watch` in that lab, past its first sync; stopped at the end."""
    with contextlib.ExitStack() as stack:

        def begin(lab: Lab) -> WatchProc:
            notify = stack.enter_context(NotifySocket())
            proc = stack.enter_context(WatchProc(lab, notify=notify))
            proc.wait_ready(timeout=60)
            return proc

        yield begin


def test_radvd_prefix_deprecated_then_gone_then_back(
    make_lab: MakeLab, start_watch: Callable[[Lab], WatchProc]
) -> None:
    lab = make_lab(ra_only=True)
    lab.lan().run(f"ip addr add {P1}100/64 dev eth0 nodad")
    advertise(lab, f"{P1} {LIFETIME} {LIFETIME}")
    assert poll(lambda: uplink_has(lab, P1), 30), lab.logs()
    create_network(lab, "v6net", f"{P1}a:71a0/125")
    probe = f"{P1}a:71a5"
    start(lab, create_container(lab, "probe", "v6net", probe))
    watch = start_watch(lab)
    assert poll(lambda: proxied(lab, probe), 30), watch.text()
    assert lab.lan_reachable(probe, within=10) is not None

    # Another prefix, the old one deprecated but still valid: said, and still reachable.
    mark = watch.mark()
    advertise(lab, f"{P1} {LIFETIME} 0", f"{P2} 600 600")
    said = rf"uplink0: .*{re.escape(P1)}/64 deprecated"
    assert watch.wait_for(said, 30, since=mark), watch.text()
    assert watch.wait_for(rf"uplink0: \+{re.escape(P2)}/64", 30, since=mark), watch.text()
    assert uplink_has(lab, P1, "deprecated")
    assert lab.lan_reachable(probe, within=10) is not None
    assert proxied(lab, probe)

    # The old prefix no longer advertised: its valid lifetime runs out, and watch says who
    # lost the LAN's reach and why, with no Docker event.
    mark = watch.mark()
    advertise(lab, f"{P2} 600 600")
    lost = (
        rf"docker network v6net: the LAN lost reach of probe \({re.escape(probe)}\): prefix "
        rf"{re.escape(P1)}/64 left uplink0"
    )
    assert watch.wait_for(lost, 60, since=mark), watch.text()
    assert not uplink_has(lab, P1)
    assert proxied(lab, probe)  # the grace rule: kept until the prefix is back
    status = lab.v6gen("status", check=False)
    assert f"{P1}a:71a0/125 is outside uplink0's prefixes" in status.stderr
    # Onto a prefix the uplink has now (the first: the lab's own 2001:db8::/64).
    assert re.search(r"--subnet 2001:db8:(2)?:a:71a0/125 ", status.stderr), status.stderr

    # The prefix back: said, and the LAN reaches the container.
    mark = watch.mark()
    advertise(lab, f"{P1} 600 600", f"{P2} 600 600")
    again = rf"the LAN reaches probe \({re.escape(probe)}\) again: prefix {re.escape(P1)}/64"
    assert watch.wait_for(again, 30, since=mark), watch.text()
    assert proxied(lab, probe)
    assert lab.lan_reachable(probe, within=10) is not None
    assert watch.count(r"sync failed|Traceback") == 0, watch.text()


def _static(lab: Lab, prefix: str) -> None:
    """uplink0's .network renumbered to `prefix` (address and gateway), then reloaded."""
    uplink = UPLINKS[0]
    text = lab.read(f"/etc/systemd/network/{uplink.network_file}")
    text = re.sub(r"Address=\S+", f"Address={prefix}1/64", text)
    text = re.sub(r"Gateway=\S+", f"Gateway={prefix}100", text)
    lab.write(f"/etc/systemd/network/{uplink.network_file}", text)
    lab.networkctl_reload()


def test_static_uplink_renumbered_and_back_keeps_everything(
    make_lab: MakeLab, start_watch: Callable[[Lab], WatchProc]
) -> None:
    """The issue's bug: the static address moved to another /64 and a container removal's sync
    ran meanwhile. Nothing is torn down; when the address is back the LAN reaches the
    container, with no Docker event and no manual sync."""
    lab = make_lab()
    new = "2001:db8:5::"
    lab.lan().run(f"ip addr add {new}100/64 dev eth0 nodad")
    create_network(lab, "v6net", "2001:db8::a:71a0/125")
    probe, web = "2001:db8::a:71a5", "2001:db8::a:71a6"
    start(lab, create_container(lab, "probe", "v6net", probe))
    other = create_container(lab, "web", "v6net", web)
    start(lab, other)
    watch = start_watch(lab)
    assert poll(lambda: proxied(lab, probe) and proxied(lab, web), 30), watch.text()
    forwarding = lab.sysctl("net.ipv6.conf.all.proxy_ndp")

    mark = watch.mark()
    _static(lab, new)
    assert watch.wait_for(r"the LAN lost reach of probe .*, web ", 60, since=mark), watch.text()
    mark = watch.mark()
    remove(lab, other)
    assert poll(lambda: web not in lab.proxy_entries(), 30), watch.text()
    # The removal's full sync, which rewrites the drop-in without web and keeps the rest.
    assert watch.wait_for(r"write\s+/etc/systemd/network/10-uplink0", 30, since=mark), watch.text()
    assert proxied(lab, probe)
    assert lab.sysctl("net.ipv6.conf.all.proxy_ndp") == forwarding == "1"
    doctor = lab.v6gen("doctor", check=False).stdout
    assert (
        "docker network v6net prefix: 2001:db8::a:71a0/125 is outside uplink0's prefixes" in doctor
    )
    assert f"--subnet {new}a:71a0/125" in doctor

    mark = watch.mark()
    _static(lab, "2001:db8::")
    assert watch.wait_for(r"the LAN reaches probe \(2001:db8::a:71a5\) again", 60, since=mark), (
        watch.text()
    )
    assert proxied(lab, probe)
    assert lab.lan_reachable(probe, within=10) is not None


ULA, ULA_PROBE = "fd00:db8:77::a:71a0/125", "fd00:db8:77::a:71a5"


def test_translated_network_follows_the_new_prefix_container_untouched(
    make_lab: MakeLab, start_watch: Callable[[Lab], WatchProc]
) -> None:
    """Issue 23 part 2 on bookworm (dockerd 20.10, its default firewall: no IPv6 filtering): a
    ULA network labelled v6gen.translate=true is reached at its suffix on the uplink's prefix
    that is not deprecated; radvd moves the LAN to another prefix and the LAN reaches the
    container at the address v6gen reports for it, while its own address never changes."""
    lab = make_lab(ra_only=True)
    for prefix in (P1, P2):
        lab.lan().run(f"ip addr add {prefix}100/64 dev eth0 nodad")
    # The lab's own prefix deprecated: a SLAAC host has it still, but moves on.
    advertise(lab, "2001:db8:: 86400 0", f"{P1} 600 600")
    assert poll(lambda: uplink_has(lab, P1), 30), lab.logs()
    lab.docker.call("POST", "/networks/create", {
        "Name": "v6t", "CheckDuplicate": True, "EnableIPv6": True,
        "IPAM": {"Config": [{"Subnet": ULA}]}, "Labels": {"v6gen.translate": "true"},
    })  # fmt: skip
    cid = create_container(lab, "probe", "v6t", ULA_PROBE)
    start(lab, cid)
    watch = start_watch(lab)
    first = f"{P1}a:71a5"
    assert poll(lambda: proxied(lab, first), 30), watch.text()
    assert watch.count(rf"v6t {re.escape(ULA)} -> {re.escape(P1)}a:71a0/125") == 1
    assert lab.lan_reachable(first, within=10) is not None
    status = lab.v6gen("status").stderr
    assert f"network v6t: {ULA} reached from the LAN at {P1}a:71a0/125 on uplink0" in status
    doctor = lab.v6gen("doctor").stdout
    assert f"docker network v6t translation: network v6t: {ULA} reached" in doctor

    mark = watch.mark()
    advertise(lab, "2001:db8:: 86400 0", f"{P1} 600 0", f"{P2} 600 600")
    moved = rf"v6t {re.escape(ULA)} -> {re.escape(P2)}a:71a0/125"
    assert watch.wait_for(moved, 30, since=mark), watch.text()
    second = f"{P2}a:71a5"
    assert poll(lambda: proxied(lab, second), 30), watch.text()
    assert lab.lan_reachable(second, within=10) is not None
    # The old address while its prefix is deprecated but valid: still reached, as a directly
    # proxied one would be.
    assert proxied(lab, first)
    assert lab.lan_reachable(first, within=10) is not None
    assert global_v6(lab, cid) == [ULA_PROBE]


@SRC_ONLY
def test_translation_on_sid_gateway_mode_nat_lets_in_published_ports(make_lab: MakeLab) -> None:
    """Where it holds with Docker's own IPv6 firewall (docker.io 28.5, dockerd's defaults,
    gateway mode nat): Docker's raw-table drop of the container's own address never meets the
    translated one, and its filter lets in the published port only, as v6gen says (`published`).
    Proxied directly, the same network reaches nothing (test_firewall.py)."""
    lab = make_lab(release="sid")
    lab.run(f"docker network create --ipv6 --subnet {ULA} --label v6gen.translate=true v6t")
    serve = "nc -ll -p 1234 -e echo reachable & nc -ll -p 80 -e echo reachable"
    lab.run(
        f"docker run -d --name probe --network v6t --ip6 {ULA_PROBE} -p 8080:80 {IMAGE}"
        f" sh -c '{serve}'"
    )
    sync = lab.v6gen("sync")
    assert sync.returncode == 0, sync.stderr
    outside = "2001:db8::a:71a5"
    rows = json.loads(lab.v6gen("status", "--json").stdout)
    assert [(r["address"], r["lan_reach"]) for r in rows] == [(outside, "published")]

    def tcp(port: int) -> bool:
        res = lab.lan().run(f"busybox nc -w 3 {outside} {port} </dev/null", check=False)
        return "reachable" in res.stdout

    assert poll(lambda: tcp(80), 20)
    assert not tcp(1234)
    assert not lab.lan_ping(outside, wait=2)
