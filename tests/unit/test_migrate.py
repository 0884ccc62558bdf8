"""v6gen.migrate: ndppd's configuration, docker-ipv6nat's chains, others' proxy lines and entries,
and the steps doctor gives for each (tests/fixtures/migrate/README.md says where the ip6tables
fixture comes from; the lab runs the real ndppd on a configuration these tests parse)."""

from __future__ import annotations

from ipaddress import IPv6Address, IPv6Network
from pathlib import Path, PurePosixPath

from v6gen import firewall, migrate
from v6gen.migrate import Found, Ndppd, NdppdProxy, NdppdRule
from v6gen.model import DockerFacts, Forwarding, HostFacts, Plan, ProxyEntry, UplinkPlan
from v6gen.paths import Paths

from fakes import FakeKernel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "migrate"
PROBE = IPv6Address("2001:db8::a:71a5")
KEY = ("uplink0", PROBE)


def plan() -> Plan:
    entry = ProxyEntry(PROBE, ())
    uplink = UplinkPlan(
        "uplink0", PurePosixPath("/etc/systemd/network/10-u.network"), (entry,), False
    )
    return Plan((uplink,), Forwarding.SYSCTL_ONLY, 0)


def names(found: Found, docker: DockerFacts | None = None) -> dict[str, migrate.Finding]:
    return {f.name: f for f in migrate.findings(found, plan(), docker or DockerFacts("20.10.24"))}


def test_parse_ndppd_prefix_without_length() -> None:
    # The shape of Debian's example (/usr/share/doc/ndppd/ndppd.conf-dist): a top-level
    # route-ttl, proxy settings, and a rule whose prefix has no length (one address).
    text = "route-ttl 30000\nproxy eth0 {\n   router yes\n   timeout 500\n   ttl 30000\n"
    text += "   rule 1111:: {\n      auto\n   }\n}\n"
    assert migrate.parse_ndppd(text) == (
        NdppdProxy("eth0", (NdppdRule(IPv6Network("1111::/128"), "auto"),)),
    )


def test_parse_ndppd_methods_and_blocks() -> None:
    text = """route-ttl 30000
    proxy uplink0 { router yes
      rule 2001:db8::a:71a0/125 { iface br-x }  # the docker network
      rule 2001:db8::/64 { }
    }
    proxy uplink1 { rule fd00::/8 { auto } }
    """
    assert migrate.parse_ndppd(text) == (
        NdppdProxy(
            "uplink0",
            (
                NdppdRule(IPv6Network("2001:db8::a:71a0/125"), "iface br-x"),
                NdppdRule(IPv6Network("2001:db8::/64"), "static"),
            ),
        ),
        NdppdProxy("uplink1", (NdppdRule(IPv6Network("fd00::/8"), "auto"),)),
    )


def test_ndppd_rule_covering_a_proxied_address_and_the_steps() -> None:
    rule = NdppdRule(IPv6Network("2001:db8::/64"), "static")
    ndppd = Ndppd(42, "/etc/ndppd.conf", (NdppdProxy("uplink0", (rule,)),))
    before = names(Found(ndppd=(ndppd,)))["migrate ndppd"]
    assert before.level == "warn"
    assert "rule 2001:db8::/64 (static) on uplink0 covers 2001:db8::a:71a5" in before.message
    assert [s[:2] for s in before.hint.split("; ")] == ["1.", "2.", "3."]
    assert before.hint.startswith("1. `v6gen sync`")
    after = names(Found(ndppd=(ndppd,), kernel=frozenset({KEY}), owned=frozenset({KEY})))
    assert after["migrate ndppd"].hint.startswith("1. done")
    # On another interface, or another prefix, it covers nothing of v6gen's.
    other = Ndppd(42, "/etc/ndppd.conf", (NdppdProxy("uplink1", (rule,)),))
    assert names(Found(ndppd=(other,)))["migrate ndppd"].level == "ok"


def test_ipv6nat_chains_by_docker_version() -> None:
    text = (FIXTURES / "ip6tables-save-ipv6nat-chains.txt").read_text()
    chains = migrate.chains_of(firewall.parse_ip6tables_save(text))
    assert chains == (
        "filter DOCKER", "filter DOCKER-ISOLATION-STAGE-1", "filter DOCKER-ISOLATION-STAGE-2",
        "filter DOCKER-USER", "nat DOCKER",
    )  # fmt: skip
    found = Found(ip6_chains=chains)
    assert "migrate docker-ipv6nat" in names(found, DockerFacts("20.10.24"))
    # Docker 27 and later make these chains themselves: no sign of docker-ipv6nat.
    assert "migrate docker-ipv6nat" not in names(found, DockerFacts("28.5.2"))
    # Its process is a sign whatever Docker's version.
    running = names(Found(ipv6nat_pids=(7,)), DockerFacts("28.5.2"))["migrate docker-ipv6nat"]
    assert "pid 7" in running.message and running.hint.startswith("1. give each container")


def test_foreign_lines_and_entries(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    dropin = tmp_path / "etc/systemd/network/10-u.network.d/40-by-hand.conf"
    dropin.parent.mkdir(parents=True)
    dropin.write_text(f"[Network]\nIPv6ProxyNDPAddress={PROBE}\nProxyNeighbor=192.0.2.1\n")
    found = migrate.read(paths, FakeKernel(), HostFacts(None, {}, None), live=False)
    assert found.foreign_lines == ((str(paths.host_path(dropin)), PROBE),)
    lines = names(Found(foreign_lines=found.foreign_lines, kernel=frozenset({KEY})))
    assert "40-by-hand.conf: 2001:db8::a:71a5" in lines["migrate proxy lines"].message
    # The entry that line's networkd added is the same address: one finding, not two.
    assert "migrate proxy entries" not in lines
    entries = names(Found(kernel=frozenset({KEY})))["migrate proxy entries"]
    assert "2001:db8::a:71a5 on uplink0" in entries.message
    assert "ip -6 neigh del proxy ADDR dev UPLINK && v6gen sync" in entries.hint
    assert "migrate proxy entries" not in names(
        Found(kernel=frozenset({KEY}), owned=frozenset({KEY}))
    )
