"""Which bridges' DAD v6gen ends: those of the networks it serves (v6gen.bridges)."""

from __future__ import annotations

from ipaddress import IPv6Network

from v6gen.bridges import served_subnets
from v6gen.model import DockerFacts, DockerNetwork, HostFacts, LinkFacts

LAN = IPv6Network("2001:db8::/64")


def _facts() -> HostFacts:
    uplink = LinkFacts("uplink0", True, (LAN,))
    other = LinkFacts("uplink1", True, (IPv6Network("2001:db8:1::/64"),))
    return HostFacts("uplink0", {"uplink0": uplink, "uplink1": other}, 252)


def _network(name: str, subnet: str, **kw: object) -> DockerNetwork:
    return DockerNetwork(name, subnets=(IPv6Network(subnet),), **kw)  # type: ignore[arg-type]


def test_only_ipv6_bridges_inside_a_served_uplinks_prefix() -> None:
    docker = DockerFacts(
        "20.10.24",
        {
            "v6": _network("v6", "2001:db8::a:71a0/125"),
            "internal": _network("internal", "2001:db8::b:0/112", internal=True),
            "macvlan": _network("macvlan", "2001:db8::c:0/112", driver="macvlan"),
            "ula": _network("ula", "fd00::/64"),
            "elsewhere": _network("elsewhere", "2001:db8:1::d:0/112"),
            "off": _network("off", "2001:db8::e:0/112", ipv6=False),
        },
    )
    assert served_subnets(["uplink0"], _facts(), docker) == (IPv6Network("2001:db8::a:71a0/125"),)
    both = served_subnets(["uplink0", "uplink1", None], _facts(), docker)
    assert both == (IPv6Network("2001:db8::a:71a0/125"), IPv6Network("2001:db8:1::d:0/112"))
    assert served_subnets([None, "gone0"], _facts(), docker) == ()
