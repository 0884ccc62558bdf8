"""Prefix translation (v6gen.translate): the address v6gen proxies and reports for a network
labelled v6gen.translate=true, its verdict, the nftables table, and a renumbering."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv6Network
from pathlib import Path

import pytest

from v6gen import engine, translate
from v6gen.engine import Adapters, Context
from v6gen.model import GATEWAY_MODE_V6, DockerNetwork, Ip6Filter, RawRule, Reach

from fakes import FakeTranslator, addr, ep
from helpers import Host

INNER = IPv6Network("fd00:db8:77::a:71a0/125")
OLD, NEW = IPv6Network("2001:db8::/64"), IPv6Network("2001:db8:2::/64")
NET = "v6t"


@pytest.fixture
def host(tmp_path: Path) -> Host:
    h = Host(tmp_path)
    h.docker.items = [ep("probe", "fd00:db8:77::a:71a5", NET)]
    labels = {translate.LABEL: "true"}
    h.docker.networks = {NET: DockerNetwork(NET, subnets=(INNER,), labels=labels)}
    return h


def _ctx(host: Host, nft: FakeTranslator) -> Context:
    ctx = host.ctx()
    adapters = Adapters(host.docker, host.networkd, host.kernel, translator=nft)
    return replace(ctx, adapters=adapters)


def test_the_lan_reaches_the_container_at_its_suffix_on_the_uplinks_prefix(host: Host) -> None:
    nft = FakeTranslator()
    out = engine.sync(_ctx(host, nft))
    assert host.kernel.proxy == {("uplink0", addr("2001:db8::a:71a5"))}
    (t,) = out.plan.translations
    assert (t.inner, t.outer) == (INNER, IPv6Network("2001:db8::a:71a0/125"))
    (ruleset,) = nft.loaded
    assert 'iifname "uplink0" ip6 daddr 2001:db8::a:71a0/125 dnat ip6 prefix to ' in ruleset
    assert 'oifname "uplink0" ip6 saddr fd00:db8:77::a:71a0/125 snat ip6 prefix to ' in ruleset
    assert out.translated is not None and "v6t fd00:db8:77::a:71a0/125 -> " in out.translated
    # Nothing changed: nft is not run again; the table gone from the kernel: loaded again.
    engine.sync(_ctx(host, nft))
    assert len(nft.loaded) == 1
    nft.table = False
    engine.sync(_ctx(host, nft))
    assert len(nft.loaded) == 2 and nft.table


def test_renumbering_moves_the_proxied_address_and_the_rules_not_the_container(
    host: Host,
) -> None:
    nft = FakeTranslator()
    engine.sync(_ctx(host, nft))
    # The new prefix comes, the old one is deprecated: translated onto the new one, and the
    # old address still reaches the container until its prefix expires (DNAT only).
    host.kernel.prefixes["uplink0"] = (OLD, NEW)
    host.kernel.deprecated["uplink0"] = (OLD,)
    out = engine.sync(_ctx(host, nft))
    old, new = ("uplink0", addr("2001:db8::a:71a5")), ("uplink0", addr("2001:db8:2::a:71a5"))
    assert host.kernel.proxy == {old, new}
    ruleset = nft.loaded[-1]
    assert "ip6 daddr 2001:db8:2::a:71a0/125 dnat ip6 prefix to" in ruleset
    assert "ip6 daddr 2001:db8::a:71a0/125 dnat ip6 prefix to" in ruleset
    assert ruleset.count("snat ip6 prefix to 2001:db8:2::a:71a0/125") == 1
    assert "snat ip6 prefix to 2001:db8::a:71a0/125" not in ruleset
    assert [line.rsplit(" (", 1)[1] for line in translate.lines(out.plan)] == [
        "prefix translation)",
        "deprecated prefix, until it expires)",
    ]
    # The old prefix runs out: its address goes; the container's own never changed.
    host.kernel.prefixes["uplink0"] = (NEW,)
    host.kernel.deprecated["uplink0"] = ()
    gone = engine.sync(_ctx(host, nft))
    assert gone.changes.delete == {old} and host.kernel.proxy == {new}
    assert "2001:db8::a:71a0/125 dnat" not in nft.loaded[-1]
    assert host.docker.items[0].address == "fd00:db8:77::a:71a5"
    assert "IPv6ProxyNDPAddress=2001:db8:2::a:71a5\n" in host.dropin.read_text()


def test_without_the_label_a_ula_network_is_not_proxied_and_nft_never_runs(host: Host) -> None:
    host.docker.networks = {NET: DockerNetwork(NET, subnets=(INNER,))}
    nft = FakeTranslator()
    out = engine.sync(_ctx(host, nft))
    assert not out.plan.uplinks and nft.loaded == []
    assert "not on-link" in out.plan.skipped[0].reason


def test_the_label_gone_deletes_the_table(host: Host) -> None:
    nft = FakeTranslator()
    engine.sync(_ctx(host, nft))
    host.docker.networks = {NET: DockerNetwork(NET, subnets=(INNER,))}
    out = engine.sync(_ctx(host, nft))
    assert not nft.table and "table ip6 v6gen {\n" not in nft.loaded[-1]
    assert out.translated == "deleted nftables table ip6 v6gen (no network translates any more)"
    assert host.kernel.proxy == set()


def test_docker_28s_raw_drop_of_the_containers_own_address_does_not_meet_the_translated_one(
    host: Host,
) -> None:
    """Measured on sid (docker.io 28.5, gateway mode nat): the raw table sees the translated
    address, so Docker's drop of the container's own does not apply; its filter then lets in
    published ports only."""
    drop = RawRule("DROP", IPv6Network("fd00:db8:77::a:71a5/128"), "br-x", in_negated=True)
    host.kernel.filter = Ip6Filter(docker_chains=True, raw_prerouting=(drop,))
    host.docker.version = "28.5.2"
    out = engine.sync(_ctx(host, FakeTranslator()))
    (entry,) = out.plan.uplinks[0].entries
    assert entry.reach is Reach.PUBLISHED and not out.plan.blocked


def test_a_prefix_too_long_for_the_subnet_is_said(host: Host) -> None:
    host.kernel.prefixes["uplink0"] = (IPv6Network("2001:db8::/126"),)
    out = engine.sync(_ctx(host, FakeTranslator()))
    assert "no prefix of uplink0 can hold fd00:db8:77::a:71a0/125" in out.plan.skipped[0].reason


def test_the_label_says_true_or_yes() -> None:
    net = DockerNetwork(NET, options={GATEWAY_MODE_V6: "routed"}, labels={translate.LABEL: "yes"})
    assert translate.wanted(net) and not translate.wanted(replace(net, labels={}))


def test_the_table_is_loaded_before_the_entry_lets_the_lan_in(host: Host) -> None:
    """A LAN packet let in by the entry ahead of the rule would start a conntrack flow that
    the rule, loaded later, never rewrites."""
    entries_then: list[set[object]] = []

    class Ordered(FakeTranslator):
        def load(self, ruleset: str) -> None:
            entries_then.append(set(host.kernel.proxy))
            super().load(ruleset)

    engine.sync(_ctx(host, Ordered()))
    assert entries_then == [set()] and host.kernel.proxy


def test_a_translated_network_is_not_said_to_be_outside_the_prefixes(host: Host) -> None:
    out = engine.sync(_ctx(host, FakeTranslator()))
    assert out.plan.subnets == ()
    assert translate.lines(out.plan) == [
        "network v6t: fd00:db8:77::a:71a0/125 reached from the LAN at 2001:db8::a:71a0/125 on "
        "uplink0 (prefix translation)"
    ]


def test_clean_deletes_the_table(host: Host) -> None:
    nft = FakeTranslator()
    engine.sync(_ctx(host, nft))
    out = engine.clean(_ctx(host, nft))
    assert not nft.table and host.kernel.proxy == set()
    assert out.translated is not None and out.translated.startswith("deleted")
    assert not host.paths.translate_ruleset.exists()
