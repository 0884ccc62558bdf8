"""The uplink's prefixes (v6gen.prefixes, adapters/addrmonitor.py): the grace rule for a prefix
that leaves the uplink, subnets against the prefixes there are now, what watch says when reach
goes and comes back, and the address notifications the monitor reads."""

from __future__ import annotations

from ipaddress import IPv6Network
from pathlib import Path

import pytest

from v6gen import engine, hooks, prefixes
from v6gen.adapters.addrmonitor import Prefixes, parse
from v6gen.errors import ExitCode
from v6gen.model import GATEWAY_MODE_V6, DockerFacts, DockerNetwork, HostFacts, LinkFacts, Plan

from fakes import addr, ep
from helpers import Host

SEED = ("uplink0", addr("2001:db8::a:71a5"))
OLD, NEW = IPv6Network("2001:db8::/64"), IPv6Network("2001:db8:5::/64")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def _hooks_installed(host: Host) -> bool:
    return all(p.exists() for p in hooks.local_hooks(host.paths))


def test_a_prefix_gone_for_a_moment_tears_nothing_down(host: Host) -> None:
    """The issue's bug: the static address moved to another /64 and a container removal's sync
    ran meanwhile. Entries, drop-in, restore file, hooks and sysctls all stay; when the prefix
    is back there is nothing to do."""
    host.docker.items = [ep(), ep("web", "2001:db8::a:71a6")]
    engine.sync(host.ctx())
    assert _hooks_installed(host)
    host.kernel.prefixes["uplink0"] = (NEW,)
    host.docker.items = [ep()]
    out = engine.sync(host.ctx())
    assert out.exit_code == ExitCode.OK
    assert host.kernel.proxy == {SEED}  # web's entry went with web
    text = host.dropin.read_text()
    assert "=2001:db8::a:71a5\n" in text and "71a6" not in text
    assert "2001:db8::a:71a5" in host.paths.restore_file("uplink0").read_text()
    assert _hooks_installed(host)
    assert host.kernel.sysctls["net/ipv6/conf/all/proxy_ndp"] == "1"
    (entry,) = out.plan.uplinks[0].entries
    assert entry.offlink and entry.lan == "none"
    host.kernel.prefixes["uplink0"] = (OLD,)
    back = engine.sync(host.ctx())
    assert back.changes.empty
    assert not back.plan.uplinks[0].entries[0].offlink
    lines = prefixes.reach_changes(_seen(out), _seen(back))
    assert lines == [
        "docker network seed_probe-network: the LAN reaches seed-probe-1 (2001:db8::a:71a5) "
        "again: prefix 2001:db8::/64 is on uplink0 again"
    ]


def _seen(out: engine.Outcome) -> tuple[Plan, HostFacts]:
    assert out.snapshot is not None
    return out.plan, out.snapshot.host


def test_watch_says_whose_reach_went_and_why(host: Host) -> None:
    host.docker.items = [ep(), ep("web", "2001:db8::a:71a6")]
    before = engine.sync(host.ctx())
    host.kernel.prefixes["uplink0"] = (NEW,)
    after = engine.sync(host.ctx())
    assert prefixes.reach_changes(_seen(before), _seen(after)) == [
        "docker network seed_probe-network: the LAN lost reach of seed-probe-1 "
        "(2001:db8::a:71a5), web (2001:db8::a:71a6): prefix 2001:db8::/64 left uplink0 (it has "
        "now 2001:db8:5::/64); their entries stay until the prefix is back or the containers go"
    ]
    # A second sync with the prefix still gone says nothing new.
    assert prefixes.reach_changes(_seen(after), _seen(engine.sync(host.ctx()))) == []


def test_a_container_started_while_its_prefix_was_gone_is_proxied_when_it_is_back(
    host: Host,
) -> None:
    """The grace rule keeps what v6gen owned; a new address outside the prefixes is not
    claimed, and watch says so when the prefix comes back and the sync proxies it."""
    host.kernel.prefixes["uplink0"] = (NEW,)
    host.docker.items = [ep()]
    gone = engine.sync(host.ctx())
    assert host.kernel.proxy == set() and not gone.plan.uplinks
    assert "not on-link for uplink0" in gone.plan.skipped[0].reason
    host.kernel.prefixes["uplink0"] = (NEW, OLD)
    back = engine.sync(host.ctx())
    assert host.kernel.proxy == {SEED}
    assert prefixes.reach_changes(_seen(gone), _seen(back)) == [
        "docker network seed_probe-network: the LAN reaches seed-probe-1 (2001:db8::a:71a5) "
        "again: prefix 2001:db8::/64 is on uplink0 again"
    ]


def test_a_container_that_goes_while_its_prefix_is_gone_loses_its_entry(host: Host) -> None:
    host.docker.items = [ep()]
    engine.sync(host.ctx())
    host.kernel.prefixes["uplink0"] = (NEW,)
    engine.sync(host.ctx())
    host.docker.items = []
    engine.sync(host.ctx())
    assert host.kernel.proxy == set() and not host.dropin.exists()


def _facts(*prefix: IPv6Network) -> HostFacts:
    link = LinkFacts("uplink0", True, prefix, None, managed=True)
    return HostFacts("uplink0", {"uplink0": link}, 252)


def test_subnets_against_the_uplinks_prefixes_with_the_fix() -> None:
    net = DockerNetwork(
        "v6",
        options={GATEWAY_MODE_V6: "routed"},
        subnets=(IPv6Network("2001:db8::a:71a0/125"),),
    )
    internal = DockerNetwork("hidden", internal=True, subnets=net.subnets)
    docker = DockerFacts(networks={"v6": net, "hidden": internal})
    (inside,) = prefixes.subnet_checks(docker, _facts(OLD), "uplink0", {})
    assert inside.inside and not inside.fix
    (outside,) = prefixes.subnet_checks(docker, _facts(NEW), "uplink0", {})
    assert not outside.inside
    assert prefixes.subnet_line(outside) == (
        "2001:db8::a:71a0/125 is outside uplink0's prefixes (2001:db8:5::/64)"
    )
    assert (
        "`docker network rm v6 && docker network create --ipv6 --subnet 2001:db8:5::a:71a0/125 "
        f"-o {GATEWAY_MODE_V6}=routed v6`" in outside.fix
    )
    assert "ipam: {config: [{subnet: 2001:db8:5::a:71a0/125}]}" in outside.fix


def test_moved_subnet_keeps_the_bits_below_the_prefix() -> None:
    subnet = IPv6Network("2001:db8:1::a:71a0/125")
    assert prefixes.moved_subnet(subnet, [IPv6Network("2001:db8:2::/64")]) == IPv6Network(
        "2001:db8:2::a:71a0/125"
    )
    # A prefix too long to hold the subnet is passed over.
    assert prefixes.moved_subnet(subnet, [IPv6Network("2001:db8:2::/126")]) is None


# Captured from Linux 6.18's rtnetlink (RTMGRP_IPV6_IFADDR) in a fresh network namespace while
# `ip addr add 2001:db8::1/64 dev wt23a nodad valid_lft 600 preferred_lft 300`, then `ip addr
# change ... preferred_lft 0 valid_lft 600` (with the link-local address's notification that
# came with it), then `ip addr del`.
ADDED = bytes.fromhex(
    "480000001400000000000000000000000a400200030000001400010020010db8000000000000000000000001"
    "140006002c010000580200008be611008be611000800080002000000"
)
DEPRECATED = bytes.fromhex(
    "480000001400000000000000000000000a402000030000001400010020010db8000000000000000000000001"
    "1400060000000000580200008be61100bee611000800080020000000"
)
LINK_LOCAL = bytes.fromhex(
    "500000001400000000000000000000000a4080fd0200000014000100fe800000000000001cc4d3fffe580640"
    "14000600ffffffffffffffff58e6110058e61100080008008000000005000b0003000000"
)
DELETED = bytes.fromhex(
    "480000001500000000000000000000000a402000030000001400010020010db8000000000000000000000001"
    "1400060000000000580200008be61100bee611000800080020000000"
)


def test_notifications_parsed_and_only_prefix_changes_and_deprecation_are_said() -> None:
    (added,) = parse(ADDED)
    assert (added.ifindex, str(added.address), added.prefixlen) == (3, "2001:db8::1", 64)
    assert added.new and not added.deprecated and added.valid == 600
    assert parse(LINK_LOCAL) == []  # link scope: not a prefix of the LAN's
    table = Prefixes()
    assert table.update(added) == "+2001:db8::/64"
    assert table.update(added) == ""  # a router advertisement refreshing lifetimes
    (deprecated,) = parse(DEPRECATED)
    assert table.update(deprecated) == "2001:db8::/64 deprecated, valid for 600 s more"
    assert table.update(deprecated) == ""
    (deleted,) = parse(DELETED)
    assert not deleted.new
    assert table.update(deleted) == "-2001:db8::/64"
