from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv6Network
from pathlib import PurePosixPath

import pytest

from v6gen.config import Config
from v6gen.model import Forwarding, HostFacts, LinkFacts, ProxyKeyName
from v6gen.plan import make_plan

from fakes import addr, ep

NET = PurePosixPath("/etc/systemd/network/10-uplink0.network")


def facts(**extra: LinkFacts) -> HostFacts:
    links = {
        "uplink0": LinkFacts("uplink0", True, (IPv6Network("2001:db8::/64"),), NET, managed=True),
        **extra,
    }
    return HostFacts("uplink0", links, 252)


def test_seed_container_is_proxied_on_default_uplink() -> None:
    plan = make_plan([ep()], Config(), facts())
    (uplink,) = plan.uplinks
    assert uplink.name == "uplink0" and uplink.network_file == NET
    assert [e.address for e in uplink.entries] == [addr("2001:db8::a:71a5")]
    assert uplink.entries[0].owners[0].service == "probe"
    assert plan.forwarding is Forwarding.SYSCTL_ONLY and uplink.set_accept_ra


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("::ffff:192.0.2.1", "IPv4-mapped"),
        ("2001:db8::1%eth0", "zone id"),
        ("2001:db8::1/64", "prefix length"),
        ("not-an-address", "not an IPv6 address"),
        ("fec0::1", "site-local"),
        ("100::1", "outside global unicast"),
    ],
)
def test_unproxyable_addresses_are_skipped_with_reason(address: str, why: str) -> None:
    plan = make_plan([ep(address=address)], Config(), facts())
    assert plan.uplinks == ()
    (skip,) = plan.skipped
    assert why in skip.reason and not skip.by_choice


def test_off_link_address_is_skipped_explaining_ndp_cannot_help() -> None:
    plan = make_plan([ep(address="2001:db8:1::5")], Config(), facts())
    assert plan.uplinks == ()
    assert "not on-link for uplink0 (2001:db8::/64)" in plan.skipped[0].reason
    assert "router advertisement" in plan.skipped[0].reason


def test_duplicate_address_is_proxied_once_with_a_warning() -> None:
    plan = make_plan([ep("a"), ep("b")], Config(), facts())
    (entry,) = plan.uplinks[0].entries
    assert [o.container for o in entry.owners] == ["a", "b"]
    assert "used by both a and b" in plan.warnings[0]


def test_labels_opt_out_and_opt_in() -> None:
    plan = make_plan(
        [ep("a", enable="false"), ep("b", "2001:db8::b", enable="True")], Config(), facts()
    )
    assert [e.address for e in plan.uplinks[0].entries] == [addr("2001:db8::b")]
    assert plan.skipped[0].by_choice
    plan = make_plan(
        [ep("a"), ep("b", "2001:db8::b", enable="yes")], Config(require_opt_in=True), facts()
    )
    assert [e.address for e in plan.uplinks[0].entries] == [addr("2001:db8::b")]


def test_garbage_enable_label_is_reported() -> None:
    plan = make_plan([ep(enable="maybe\n[Network]")], Config(), facts())
    assert plan.uplinks == ()
    assert "neither true nor false" in plan.skipped[0].reason
    assert "\n" not in plan.skipped[0].reason


def test_uplink_label_must_name_a_configured_uplink() -> None:
    uplink1 = LinkFacts(
        "uplink1",
        True,
        (IPv6Network("2001:db8:1::/64"),),
        PurePosixPath("/etc/systemd/network/10-uplink1.network"),
        managed=True,
    )
    plan = make_plan([ep(address="2001:db8:1::5", uplink="uplink1")], Config(), facts())
    assert "not a configured uplink" in plan.skipped[0].reason
    config = Config(uplinks=("uplink0", "uplink1"))
    plan = make_plan(
        [ep(address="2001:db8:1::5", uplink="uplink1")], config, facts(uplink1=uplink1)
    )
    assert [u.name for u in plan.uplinks] == ["uplink1"]


@pytest.mark.parametrize("label", ["eth0\n[Network]", "a/b", "x" * 16, "", "eth0 ", "IPv6=1"])
def test_invalid_uplink_label_never_reaches_a_file(label: str) -> None:
    plan = make_plan([ep(uplink=label)], Config(uplinks=("uplink0",)), facts())
    assert plan.uplinks == ()
    assert "is invalid" in plan.skipped[0].reason


def test_network_uplinks_maps_a_docker_network() -> None:
    uplink1 = LinkFacts(
        "uplink1",
        True,
        (IPv6Network("2001:db8:1::/64"),),
        PurePosixPath("/run/systemd/network/10-netplan-uplink1.network"),
        True,
    )
    config = Config(network_uplinks={"second": "uplink1"})
    plan = make_plan(
        [ep(), ep("s", "2001:db8:1::5", network="second")], config, facts(uplink1=uplink1)
    )
    assert {u.name: [str(e.address) for e in u.entries] for u in plan.uplinks} == {
        "uplink0": ["2001:db8::a:71a5"],
        "uplink1": ["2001:db8:1::5"],
    }


def test_unmanaged_or_missing_uplink_fails_that_uplink_only() -> None:
    uplink1 = LinkFacts("uplink1", True, (IPv6Network("2001:db8:1::/64"),), None, False)
    config = Config(network_uplinks={"second": "uplink1", "third": "gone0"})
    plan = make_plan(
        [
            ep(),
            ep("s", "2001:db8:1::5", network="second"),
            ep("t", "2001:db8:2::5", network="third"),
        ],
        config,
        facts(uplink1=uplink1, gone0=LinkFacts("gone0", False)),
    )
    assert [u.name for u in plan.uplinks] == ["uplink0"]
    assert {f.uplink: f.message for f in plan.failed} == {
        "gone0": "uplink gone0 does not exist",
        "uplink1": "uplink uplink1 is not managed by systemd-networkd",
    }


def test_two_uplinks_sharing_one_network_file_both_fail() -> None:
    uplink1 = LinkFacts("uplink1", True, (IPv6Network("2001:db8:1::/64"),), NET, True)
    config = Config(network_uplinks={"second": "uplink1"})
    plan = make_plan(
        [ep(), ep("s", "2001:db8:1::5", network="second")], config, facts(uplink1=uplink1)
    )
    assert plan.uplinks == ()
    assert {f.uplink for f in plan.failed} == {"uplink0", "uplink1"}


def test_an_uplink_whose_network_file_also_configures_other_links_fails() -> None:
    """Name=en* or a catch-all: the drop-in would proxy, forward and take RAs on those too."""
    f = facts()
    shared = HostFacts(
        f.default_uplink, f.links, 252, network_file_links={NET: frozenset({"uplink0", "veth1a2b"})}
    )
    plan = make_plan([ep()], Config(), shared)
    assert plan.uplinks == ()
    (failure,) = plan.failed
    assert failure.uplink == "uplink0"
    assert failure.message == (
        f"{NET} also configures veth1a2b: a drop-in for uplink0 would apply there too"
    )
    assert failure.hint == "give uplink0 a .network file of its own (a [Match] Name= for it alone)"
    assert plan.skipped[0].reason == "uplink uplink0 cannot be managed"


def test_an_uplink_alone_in_its_network_file_is_planned() -> None:
    f = facts()
    alone = HostFacts(
        f.default_uplink, f.links, 252, network_file_links={NET: frozenset({"uplink0"})}
    )
    assert [u.name for u in make_plan([ep()], Config(), alone).uplinks] == ["uplink0"]


def test_an_address_this_host_holds_itself_is_not_proxied() -> None:
    f = facts()
    own = HostFacts(f.default_uplink, f.links, 252, host_addresses={addr("2001:db8::a:71a5"): "lo"})
    plan = make_plan([ep()], Config(), own)
    assert plan.uplinks == () and plan.failed == ()
    assert plan.skipped[0].reason == (
        "this host holds 2001:db8::a:71a5 itself (on lo): proxying it would answer for the "
        "host's own address"
    )


def test_an_address_a_lan_host_answers_for_is_not_proxied() -> None:
    router = LinkFacts(
        "uplink0",
        True,
        (IPv6Network("2001:db8::/64"),),
        NET,
        managed=True,
        neighbours={addr("2001:db8::100"): "52:54:00:12:34:56"},
    )
    plan = make_plan(
        [ep(), ep("typo", "2001:db8::100")],
        Config(),
        HostFacts("uplink0", {"uplink0": router}, 252),
    )
    assert [str(e.address) for e in plan.uplinks[0].entries] == ["2001:db8::a:71a5"]
    (skipped,) = plan.skipped
    assert (skipped.container, skipped.address) == ("typo", "2001:db8::100")
    assert skipped.reason.startswith(
        "a LAN host answers for it on uplink0 (52:54:00:12:34:56): proxying it would take"
    )
    # A neighbour without a link-layer address (a point-to-point uplink) is named without one.
    bare = replace(router, neighbours={addr("2001:db8::100"): ""})
    plan = make_plan(
        [ep("typo", "2001:db8::100")], Config(), HostFacts("uplink0", {"uplink0": bare}, 252)
    )
    assert plan.skipped[0].reason.startswith("a LAN host answers for it on uplink0: proxying")


def test_no_default_route_and_no_config() -> None:
    plan = make_plan([ep()], Config(), HostFacts(None, {}, 252))
    assert "no IPv6 default route" in plan.skipped[0].reason


def test_filters_by_network_and_project() -> None:
    plan = make_plan(
        [ep(), ep("x", "2001:db8::b", network="other")],
        Config(include_networks=("other",)),
        facts(),
    )
    assert [str(e.address) for e in plan.uplinks[0].entries] == ["2001:db8::b"]
    plan = make_plan(
        [ep(), ep("x", "2001:db8::b", project="p2")], Config(include_projects=("p2",)), facts()
    )
    assert [str(e.address) for e in plan.uplinks[0].entries] == ["2001:db8::b"]


@pytest.mark.parametrize(
    ("version", "mode"),
    [
        (247, Forwarding.SYSCTL_ONLY),
        (255, Forwarding.SYSCTL_ONLY),
        (256, Forwarding.LINK_KEY),
        (257, Forwarding.LINK_KEY),
        (None, Forwarding.LINK_KEY),
    ],
)
def test_forwarding_follows_systemd_version(version: int | None, mode: Forwarding) -> None:
    f = facts()
    plan = make_plan([ep()], Config(), HostFacts(f.default_uplink, f.links, version))
    assert plan.forwarding is mode


NDP, NEIGHBOR = ProxyKeyName.IPV6_PROXY_NDP_ADDRESS, ProxyKeyName.PROXY_NEIGHBOR


@pytest.mark.parametrize(
    ("version", "running", "key"),
    [
        (262, True, NEIGHBOR),
        (263, True, NEIGHBOR),
        (261, True, NDP),
        (257, True, NDP),
        (None, False, NDP),
        # Only the installed networkctl says 262: mid-upgrade, the running daemon may be older.
        (262, False, NDP),
    ],
)
def test_proxy_key_is_the_new_name_only_for_a_running_262(
    version: int | None, running: bool, key: ProxyKeyName
) -> None:
    f = facts()
    host = HostFacts(f.default_uplink, f.links, version, systemd_version_running=running)
    assert make_plan([ep()], Config(), host).proxy_key is key


def test_the_admins_systemd_version_decides_the_proxy_key() -> None:
    f = facts()
    unknown = HostFacts(f.default_uplink, f.links, None)
    assert make_plan([ep()], Config(systemd_version=262), unknown).proxy_key is NEIGHBOR
    running_262 = HostFacts(f.default_uplink, f.links, 262, systemd_version_running=True)
    assert make_plan([ep()], Config(systemd_version=257), running_262).proxy_key is NDP


def test_addresses_are_canonical_and_sorted() -> None:
    plan = make_plan(
        [ep("b", "2001:0DB8:0::A:71A6"), ep("a", "2001:db8::a:71a5")], Config(), facts()
    )
    assert [str(e.address) for e in plan.uplinks[0].entries] == [
        "2001:db8::a:71a5",
        "2001:db8::a:71a6",
    ]
