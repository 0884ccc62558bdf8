"""Watch's fast path (v6gen.instant, engine.update_container): what dockerd says while it starts
a container (bodies captured from dockerd 20.10 and 28.5, tests/fixtures/docker/starting/),
what each batch of events comes to, and one container's entries changed on a fake host."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from v6gen import discover, engine
from v6gen.instant import Instant, steps
from v6gen.model import Endpoint

from fakes import addr, ep
from helpers import Host

STARTING = Path(__file__).resolve().parents[1] / "fixtures/docker/starting"
RELEASES = sorted(p.name for p in STARTING.iterdir() if p.is_dir())
STATIC = "2001:db8::e:10"


def body(release: str, name: str) -> Any:
    return json.loads((STARTING / release / name).read_text())


def entry(release: str, name: str) -> dict[str, Any]:
    (only,) = body(release, name)
    return dict(only)


def events(release: str) -> list[dict[str, Any]]:
    text = (STARTING / release / "events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ----- what dockerd says while it starts a container ----------------------------------------
@pytest.mark.parametrize("release", RELEASES)
def test_a_connecting_container_has_its_static_address_and_labels(release: str) -> None:
    found = discover.starting_endpoints(entry(release, "static_network-connect_list.json"))
    assert [(e.container, e.network, e.address) for e in found] == [("web", "cap", STATIC)]
    (e,) = found
    assert (e.project, e.service, e.enable_label, e.uplink_label) == ("cap", "web", "true", None)


@pytest.mark.parametrize("release", ["bookworm-20.10.24+dfsg1", "sid-28.5.2+dfsg4"])
def test_a_static_address_is_listed_from_create_on(release: str) -> None:
    found = discover.starting_endpoints(entry(release, "static_container-create_list.json"))
    assert [e.address for e in found] == [STATIC]
    assert discover.starting_endpoints(entry(release, "dynamic_container-create_list.json")) == []


@pytest.mark.parametrize("release", RELEASES)
def test_an_address_dockerd_chose_comes_from_the_network(release: str) -> None:
    listed = entry(release, "dynamic_network-connect_list.json")
    network = body(release, "dynamic_network-connect_network.json")
    started = discover.starting_endpoints(entry(release, "dynamic_container-start_list.json"))
    if release.startswith("bookworm"):
        # 20.10's listing has no address of dockerd's choosing until the container runs.
        assert discover.starting_endpoints(listed) == []
    assigned = discover.assigned_address(network, listed["Id"])
    assert assigned is not None and "/" not in assigned
    found = discover.starting_endpoints(listed, {"cap": assigned})
    assert [e.address for e in found] == [e.address for e in started] == [assigned]


@pytest.mark.parametrize("release", RELEASES)
def test_a_restarted_container_is_connected_while_it_still_says_exited(release: str) -> None:
    listed = entry(release, "restart_network-connect_list.json")
    assert listed["State"] in ("exited", "running")
    assert [e.address for e in discover.starting_endpoints(listed)] == [STATIC]


def test_the_full_listing_still_shows_a_container_that_died_on_20_10() -> None:
    """Why the full sync is told which containers died (engine.sync's `stopped`)."""
    (release,) = [r for r in RELEASES if r.startswith("bookworm")]
    died = body(release, "stop_container-die_list.json")
    assert [e.address for e in discover.endpoints_from_list(died)] == [STATIC]


def test_a_connecting_container_is_not_in_the_full_listing_on_20_10() -> None:
    """Why the full sync is told which containers are starting (engine.sync's `starting`):
    on 20.10 a container is connected ~0.6 s before it runs (on 28.5 it may already run by
    the time the listing answers)."""
    (release,) = [r for r in RELEASES if r.startswith("bookworm")]
    listed = body(release, "static_network-connect_list.json")
    assert discover.endpoints_from_list(listed) == []


def test_odd_network_bodies_assign_nothing() -> None:
    bodies: list[Any] = [None, [], {"Containers": None}, {"Containers": {"c": {"IPv6Address": ""}}}]
    for network in bodies:
        assert discover.assigned_address(network, "c") is None


# ----- what a batch of events comes to --------------------------------------------------------
@pytest.mark.parametrize("release", RELEASES)
def test_captured_events_come_to_what_happened(release: str) -> None:
    evs = events(release)
    cid = next(e["Actor"]["Attributes"]["container"] for e in evs if e["Action"] == "connect")
    first_start = next(i for i, e in enumerate(evs) if e["Action"] == "start")
    up = steps(evs[: first_start + 1])[cid]
    assert not up.gone and up.network is not None and up.network[1] == "cap"
    assert steps(evs)[cid].gone  # removed at the end


def test_a_container_that_died_before_its_connect_was_acted_on_is_gone() -> None:
    net = {"Type": "network", "Action": "connect", "Actor": {"ID": "n1", "Attributes": {
        "container": "c1", "name": "cap"}}}  # fmt: skip
    die = {"Type": "container", "Action": "die", "Actor": {"ID": "c1", "Attributes": {}}}
    start = {"Type": "container", "Action": "start", "Actor": {"ID": "c1", "Attributes": {}}}
    assert steps([net, die])["c1"].gone
    again = steps([net, die, start])["c1"]  # a restart policy brought it back
    assert not again.gone and again.network is None
    leave = dict(net, Action="disconnect")
    left = steps([net, leave])["c1"]
    assert left.left == {"cap"} and left.network is None
    assert steps([{"Type": "container", "Action": "exec_start", "Actor": {"ID": "c1"}}]) == {}
    assert steps([{"Type": "container", "Actor": "junk"}, {}]) == {}


# ----- the fast path's memory -------------------------------------------------------------------
class Source:
    def __init__(self) -> None:
        self.answers: dict[str, list[Endpoint]] = {}
        self.asked: list[tuple[str, tuple[str, str] | None]] = []

    def starting_endpoints(
        self, container_id: str, network: tuple[str, str] | None = None
    ) -> list[Endpoint]:
        self.asked.append((container_id, network))
        return list(self.answers.get(container_id, []))


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def snapshot(*endpoints: Endpoint, listed: tuple[str, ...] = ()) -> engine.Snapshot:
    from v6gen.model import DockerFacts, HostFacts

    return engine.Snapshot(
        tuple(endpoints), HostFacts("uplink0", {}, 252), DockerFacts(), frozenset(listed)
    )


def ev(action: str, cid: str) -> dict[str, Any]:
    if action in ("connect", "disconnect"):
        attributes = {"container": cid, "name": "seed_probe-network"}
        return {
            "Type": "network",
            "Action": action,
            "Actor": {"ID": "n1", "Attributes": attributes},
        }
    return {"Type": "container", "Action": action, "Actor": {"ID": cid}}


class Rig:
    def __init__(self) -> None:
        self.source = Source()
        self.clock = Clock()
        self.updates: list[tuple[str, list[str]]] = []
        self.seen: list[engine.Snapshot] = []  # what each update planned from
        self.fast = Instant(self.source, self.update, patience=30, clock=self.clock)

    def update(self, snap: engine.Snapshot, cid: str, found: list[Endpoint]) -> engine.Snapshot:
        self.updates.append((cid, [e.address for e in found]))
        self.seen.append(snap)
        others = [e for e in snap.endpoints if e.container_id != cid]
        return engine.Snapshot((*others, *found), snap.host, snap.docker, snap.listed)


def test_nothing_before_the_first_sync() -> None:
    r = Rig()
    r.fast.react([ev("connect", "id-a")])
    assert r.source.asked == [] and r.updates == []


def test_connect_adds_start_is_quiet_and_die_drops() -> None:
    r = Rig()
    a = ep("a", "2001:db8::a:1")
    r.source.answers["id-a"] = [a]
    r.fast.synced(snapshot())
    r.fast.react([ev("connect", "id-a")])
    assert r.updates == [("id-a", ["2001:db8::a:1"])]
    assert r.source.asked == [("id-a", ("n1", "seed_probe-network"))]
    assert r.fast.starting() == [a]  # for the full sync, which can't list it yet
    r.fast.react([ev("start", "id-a")])
    assert len(r.updates) == 1  # nothing new
    r.fast.synced(snapshot(a, listed=("id-a",)))
    assert r.fast.starting() == []
    r.fast.react([ev("die", "id-a")])
    assert r.updates[-1] == ("id-a", [])
    assert r.fast.stopped() == ["id-a"]  # the listing may still show it running
    r.fast.synced(snapshot(listed=("id-a",)))
    assert r.fast.stopped() == ["id-a"]
    r.fast.synced(snapshot())
    assert r.fast.stopped() == []


def test_create_asks_for_a_static_address_before_any_connect() -> None:
    r = Rig()
    a = ep("a", "2001:db8::a:1")
    r.source.answers["id-a"] = [a]
    r.fast.synced(snapshot())
    r.fast.react([ev("create", "id-a")])
    assert r.source.asked == [("id-a", None)]
    assert r.updates == [("id-a", ["2001:db8::a:1"])]
    r.fast.react([ev("connect", "id-a")])
    assert len(r.updates) == 1  # claimed already


def test_a_new_network_is_asked_for_at_once_so_its_first_container_needs_no_asking() -> None:
    from v6gen.model import DockerFacts, DockerNetwork

    asked: list[str] = []
    known = DockerFacts("28.5.2", {"fresh": DockerNetwork("fresh")})

    def networks() -> DockerFacts:
        asked.append("GET /networks")
        return known

    r = Rig()
    r.fast = Instant(r.source, r.update, networks=networks)
    r.fast.synced(snapshot())
    made = {"Type": "network", "Action": "create", "Actor": {"ID": "n2", "Attributes": {}}}
    r.fast.react([made])
    assert asked == ["GET /networks"] and r.updates == [] and r.source.asked == []
    r.source.answers["id-a"] = [ep("a", "2001:db8::a:1")]
    r.fast.react([ev("create", "id-a")])
    assert r.seen[-1].docker is known  # planned with the network known
    assert asked == ["GET /networks"]


def test_a_container_that_died_before_its_events_were_acted_on_is_never_looked_up() -> None:
    r = Rig()
    r.source.answers["id-a"] = [ep("a", "2001:db8::a:1")]
    r.fast.synced(snapshot())
    r.fast.react([ev("connect", "id-a"), ev("start", "id-a"), ev("die", "id-a")])
    assert r.source.asked == [] and r.updates == []
    assert r.fast.starting() == [] and r.fast.stopped() == ["id-a"]


def test_starting_and_stopped_are_given_up_after_patience_and_on_reconnect() -> None:
    r = Rig()
    r.source.answers["id-a"] = [ep("a", "2001:db8::a:1")]
    r.fast.synced(snapshot(ep("b", "2001:db8::a:2"), listed=("id-b",)))
    r.fast.react([ev("connect", "id-a"), ev("die", "id-b")])
    assert len(r.fast.starting()) == 1 and r.fast.stopped() == ["id-b"]
    r.clock.now += 31
    assert r.fast.starting() == [] and r.fast.stopped() == []
    r.fast.react([ev("connect", "id-a")])  # known already: no update, but starting again
    r.fast.forget()
    assert r.fast.starting() == [] and r.fast.stopped() == []


def test_disconnect_drops_that_network_without_asking() -> None:
    r = Rig()
    a = ep("a", "2001:db8::a:1")
    r.fast.synced(snapshot(a, listed=("id-a",)))
    r.fast.react([ev("disconnect", "id-a")])
    assert r.source.asked == [] and r.updates == [("id-a", [])]


def test_a_failed_sync_stops_the_fast_path_until_the_next() -> None:
    r = Rig()
    r.source.answers["id-a"] = [ep("a", "2001:db8::a:1")]
    r.fast.synced(None)
    r.fast.react([ev("connect", "id-a")])
    assert r.updates == []


# ----- one container's entries on a fake host ---------------------------------------------------
@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def restore_lines(host: Host) -> set[str]:
    path = host.paths.restore_file("uplink0")
    text = path.read_text() if path.exists() else ""
    return {line for line in text.splitlines() if line.startswith("neigh")}


def fast(host: Host, snap: engine.Snapshot, cid: str, *found: Endpoint) -> engine.Snapshot:
    _, updated = engine.update_container(host.ctx(), snap, cid, list(found))
    return updated


def test_update_adds_claims_and_writes_the_restore_line_without_touching_networkd(
    host: Host,
) -> None:
    a, b = ep("a", "2001:db8::a:1"), ep("b", "2001:db8::a:2")
    host.docker.items = [a]
    out = engine.sync(host.ctx())
    assert out.snapshot is not None
    reloads, dropin = host.networkd.reloads, host.dropin.read_text()
    fast(host, out.snapshot, "id-b", b)
    assert host.kernel.proxy == {("uplink0", addr(a.address)), ("uplink0", addr(b.address))}
    assert host.kernel.batches[-1] == (frozenset({("uplink0", addr(b.address))}), frozenset())
    assert restore_lines(host) == {f"neigh replace proxy {x.address} dev uplink0" for x in (a, b)}
    from v6gen import state

    assert ("uplink0", addr(b.address)) in state.owned(host.paths)
    assert host.networkd.reloads == reloads and host.dropin.read_text() == dropin
    assert not host.paths.reload_marker.exists()


def test_update_never_claims_an_entry_someone_else_added(host: Host) -> None:
    b = ep("b", "2001:db8::a:2")
    out = engine.sync(host.ctx())
    assert out.snapshot is not None
    theirs = ("uplink0", addr(b.address))
    host.kernel.proxy.add(theirs)
    snap = fast(host, out.snapshot, "id-b", b)
    from v6gen import state

    assert theirs not in state.owned(host.paths)
    fast(host, snap, "id-b")  # gone again: still not ours to delete
    assert theirs in host.kernel.proxy


def test_drop_keeps_an_address_another_container_still_has(host: Host) -> None:
    a, twin = ep("a", "2001:db8::a:1"), ep("twin", "2001:db8::a:1")
    host.docker.items = [a, twin]
    out = engine.sync(host.ctx())
    assert out.snapshot is not None
    snap = fast(host, out.snapshot, "id-a")
    assert ("uplink0", addr(a.address)) in host.kernel.proxy
    fast(host, snap, "id-twin")
    assert host.kernel.proxy == set()
    assert not host.paths.restore_file("uplink0").exists()


def test_update_follows_the_plan_it_shares_with_sync(host: Host) -> None:
    """Labels, on-link prefix: make_plan decides, so the fast path can't add what sync would
    not (a property test compares the two paths at large: test_instant_properties.py)."""
    out = engine.sync(host.ctx())
    assert out.snapshot is not None
    snap = out.snapshot
    for e in (
        ep("off", "2001:db8::a:3", enable="false"),
        ep("far", "2001:db8:ffff::3"),
        ep("bad", "2001:db8::a:4", uplink="eth9"),
    ):
        snap = fast(host, snap, e.container_id, e)
    assert host.kernel.proxy == set()


def test_asking_and_changing_happen_under_the_lock_and_a_start_alone_asks_nothing() -> None:
    from collections.abc import Iterator
    from contextlib import contextmanager

    held: list[str] = []
    r = Rig()

    @contextmanager
    def hold() -> Iterator[None]:
        held.append("in")
        yield
        held.append("out")

    def answer(container_id: str, network: tuple[str, str] | None = None) -> list[Endpoint]:
        assert held[-1:] == ["in"], "Docker asked without the lock"
        return [ep("a", "2001:db8::a:1")]

    r.source.starting_endpoints = answer  # type: ignore[method-assign]
    r.fast = Instant(r.source, r.update, hold=hold, clock=r.clock)
    r.fast.synced(snapshot())
    r.fast.react([ev("start", "id-a")])  # never connected (a replayed or odd event)
    assert held == [] and r.updates == []
    r.fast.react([ev("connect", "id-a"), ev("start", "id-a")])
    assert held == ["in", "out"] and len(r.updates) == 1


def test_what_arrived_while_waiting_for_the_lock_counts_too() -> None:
    """Another run held the lock while the container was connected and died: its death, which
    came meanwhile, is asked for once the lock is held, and nothing is looked up or added."""
    r = Rig()
    r.source.answers["id-a"] = [ep("a", "2001:db8::a:1")]
    r.fast.synced(snapshot())
    r.fast.react([ev("connect", "id-a")], lambda: [ev("start", "id-a"), ev("die", "id-a")])
    assert r.source.asked == [] and r.updates == []


def test_a_disconnect_is_remembered_until_the_listing_agrees() -> None:
    r = Rig()
    a = ep("a", "2001:db8::a:1")
    r.fast.synced(snapshot(a, listed=("id-a",)))
    r.fast.react([ev("disconnect", "id-a")])
    assert r.fast.left() == [("id-a", "seed_probe-network")]
    stale = replace(snapshot(listed=("id-a",)), listed_on=frozenset({("id-a", a.network)}))
    r.fast.synced(stale)
    assert r.fast.left() == [("id-a", "seed_probe-network")]
    r.fast.synced(snapshot(listed=("id-a",)))
    assert r.fast.left() == []
    r.fast.react([ev("disconnect", "id-a"), ev("connect", "id-a")])
    assert r.fast.left() == []


def test_the_full_sync_leaves_out_what_the_listing_shows_a_moment_too_long(host: Host) -> None:
    """dockerd 20.10 still lists a container's network for a moment after `disconnect`, and a
    container for a moment after `die`: told so, the sync neither re-adds nor re-writes them."""
    a, b = ep("a", "2001:db8::a:1"), ep("b", "2001:db8::a:2")
    host.docker.items = [a, b]
    engine.sync(host.ctx())
    out = engine.sync(host.ctx(), stopped=["id-a"], left=[("id-b", b.network)])
    assert out.plan.wanted_entries() == frozenset()
    assert out.snapshot is not None and out.snapshot.listed == {"id-a", "id-b"}
    assert out.snapshot.listed_on == {("id-a", a.network), ("id-b", b.network)}


def test_a_deleted_entry_its_drop_in_still_lists_stays_claimed_until_the_sync(host: Host) -> None:
    """networkd may be applying that drop-in (a reload is asynchronous) and put the entry back:
    the full sync that rewrites the drop-in must still know it is v6gen's to delete."""
    from v6gen import state

    a = ep("a", "2001:db8::a:1")
    key = ("uplink0", addr(a.address))
    host.docker.items = [a]
    out = engine.sync(host.ctx())
    assert out.snapshot is not None
    fast(host, out.snapshot, "id-a")
    assert key not in host.kernel.proxy and key in state.owned(host.paths)
    host.kernel.proxy.add(key)  # networkd applied the old drop-in late
    host.docker.items = []
    engine.sync(host.ctx())
    assert key not in host.kernel.proxy and key not in state.owned(host.paths)
