"""The fast path against the full sync, over many generated situations (labels, include
filters, two uplinks, on- and off-link addresses, addresses two containers share, macvlan and
internal networks, Docker's firewall, entries someone else added): what the fast path adds for
a container that starts is a subset of what the following full sync wants, what it deletes for
one that stops is not wanted any more, and after that full sync the kernel, the restore files,
the drop-ins and state.json are exactly what full syncs alone give (one on a fresh host, for the
start)."""

from __future__ import annotations

import tempfile
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from v6gen import engine
from v6gen.config import Config
from v6gen.model import GATEWAY_MODE_V6, DockerNetwork, Endpoint, Ip6Filter, RawRule
from v6gen.ports import ProxyKey

from helpers import Host

UPLINK1 = "[Match]\nName=uplink1\n\n[Network]\nAddress=2001:db8:1::1/64\n"
NETWORKS = {
    "n1": DockerNetwork("n1"),
    "routed": DockerNetwork("routed", options={GATEWAY_MODE_V6: "routed"}),
    "mac": DockerNetwork("mac", driver="macvlan"),
    "int": DockerNetwork("int", internal=True),
}  # fmt: skip
# A small pool, so that containers share addresses; some off-link, one the host's own.
ADDRESSES = [
    "2001:db8::a:1",
    "2001:db8::a:2",
    "2001:db8::a:3",
    "2001:db8:1::b:1",
    "2001:db8:1::b:2",
    "2001:db8:ffff::9",
    "2001:db8::1",
    "fe80::5",
]

# Weighted towards what gets proxied, so that most examples have something to compare.
endpoint_parts = st.tuples(
    st.sampled_from(["n1"] * 4 + ["routed", "routed", "mac", "int"]),
    st.sampled_from(ADDRESSES[:5] * 3 + ADDRESSES[5:]),
    st.sampled_from([None] * 6 + ["true", "false", "maybe"]),
    st.sampled_from([None, None, None, None, "uplink0", "uplink1", "eth9"]),
    st.sampled_from([None, "p1", "p1", "p2"]),
)
containers = st.lists(st.lists(endpoint_parts, min_size=1, max_size=2), min_size=1, max_size=4)
filters = st.sampled_from(
    [
        Ip6Filter(docker_chains=False),
        None,  # unreadable: proxied, reach unknown
        Ip6Filter(docker_chains=True),
        Ip6Filter(True, (RawRule("DROP", IPv6Network("2001:db8::a:2/128"), "br-x", True),)),
    ]
)
configs = st.builds(
    Config,
    uplinks=st.sampled_from([(), ("uplink0", "uplink1")]),
    include_networks=st.sampled_from([()] * 4 + [("n1", "routed", "mac")]),
    include_projects=st.sampled_from([()] * 4 + [("p1",)]),
    require_opt_in=st.sampled_from([False] * 5 + [True]),
)


Spec = list[list[tuple[str, str, str | None, str | None, str | None]]]


def endpoints(spec: Spec) -> list[Endpoint]:
    return [
        Endpoint(f"id{i}", f"c{i}", net, address, project, "svc", enable, uplink)
        for i, parts in enumerate(spec)
        for net, address, enable, uplink, project in parts
    ]


def make_host(root: Path, config: Config, rules: Ip6Filter | None, foreign: set[ProxyKey]) -> Host:
    host = Host(root, config=config)
    (root / "etc/systemd/network/20-uplink1.network").write_text(UPLINK1)
    host.networkd.manage("uplink1", "/etc/systemd/network/20-uplink1.network", index=3)
    host.kernel.prefixes["uplink1"] = (IPv6Network("2001:db8:1::/64"),)
    host.kernel.own[IPv6Address("2001:db8::1")] = "uplink0"
    host.kernel.filter = rules
    host.kernel.proxy |= foreign
    host.docker.networks = dict(NETWORKS)
    return host


def observed(host: Host) -> dict[str, object]:
    """Everything the two paths must agree on, by value."""
    files = {
        str(p.relative_to(host.root)): p.read_text()
        for p in sorted(host.root.rglob("*"))
        if p.is_file() and p.name not in ("lock", "reload-owed")
    }
    return {"kernel": sorted(host.kernel.proxy), "files": files}


def full_sync(host: Host, items: list[Endpoint]) -> engine.Outcome:
    host.docker.items = items
    return engine.sync(host.ctx())


foreign_entries = st.sets(st.sampled_from(["2001:db8::a:1", "2001:db8::a:3"]), max_size=1)


@settings(max_examples=60, deadline=None)
@given(
    spec=containers,
    config=configs,
    rules=filters,
    foreign=foreign_entries,
    pick=st.integers(0, 5),
)
def test_fast_path_agrees_with_the_full_sync(
    spec: Spec,
    config: Config,
    rules: Ip6Filter | None,
    foreign: set[str],
    pick: int,
) -> None:
    world = endpoints(spec)
    cid = f"id{pick % len(spec)}"
    mine = [e for e in world if e.container_id == cid]
    before = [e for e in world if e.container_id != cid]
    theirs = {("uplink0", IPv6Address(a)) for a in foreign}
    with tempfile.TemporaryDirectory() as tmp:
        a, b, c = (Path(tmp) / n for n in "abc")
        for d in (a, b, c):
            d.mkdir()

        # A container starts: fast path, then the full sync.
        host = make_host(a, config, rules, theirs)
        first = full_sync(host, before)
        assert first.snapshot is not None
        fast, _ = engine.update_container(host.ctx(), first.snapshot, cid, mine)
        after = full_sync(host, world)
        event(f"fast path added {min(len(fast.changes.add), 2)}")
        assert fast.changes.add <= after.plan.wanted_entries()
        assert not fast.changes.delete
        fresh = make_host(b, config, rules, theirs)
        full_sync(fresh, world)
        assert observed(host) == observed(fresh)

        # ... and stops: fast path, then the full sync.
        assert after.snapshot is not None
        gone, _ = engine.update_container(host.ctx(), after.snapshot, cid, [])
        again = full_sync(host, before)
        assert not gone.changes.add
        event(f"fast path deleted {min(len(gone.changes.delete), 2)}")
        assert not gone.changes.delete & again.plan.wanted_entries()
        assert not gone.changes.delete & theirs
        # Against the same two syncs without the fast path (a fresh host that never proxied
        # anything has no state.json at all).
        twin = make_host(c, config, rules, theirs)
        full_sync(twin, world)
        full_sync(twin, before)
        assert observed(host) == observed(twin)
