"""Watch's fast path: a container's proxy entries the moment Docker connects it to a network.

Docker sets up a container's networks, and emits a network `connect` event, before the
container runs (measured in the lab: ~600 ms before `docker run -d` returns on dockerd 20.10,
~20-80 ms on 28.5). A LAN host that sends its first neighbour solicitation before the entry
exists gets no answer and retransmits only after RetransTimer (1 s), so the debounced sync is
too late for it. Here each event is acted on at once for its one container: its endpoints as
Docker has them now (ContainerSource), planned by make_plan over everything the last sync saw
(engine.update_container), and only that container's entries and restore-file lines changed.
The full sync follows as before and owns everything else.

GET /containers/json lags behind the events: containers seen connecting don't run yet and are
left out ("starting"), and a container that died, or left a network, is still listed as it was
for a moment ("stopped", "left"). The full sync is handed all three (engine.sync), or it would
undo what the fast path just did (and a networkd reload of the drop-in it wrote would put back
an entry the fast path deleted, no longer v6gen's to delete): each until a listing agrees or
the next event says otherwise, given up after `patience` seconds, and all when Docker
reconnects.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import Any

from v6gen.engine import Snapshot
from v6gen.model import DockerFacts, Endpoint
from v6gen.ports import ContainerSource

# Every container with a network is connected before it starts (and again when it restarts):
# its addresses are asked for then, once. A `start` only says it lives after all.
_CONNECT = ("network", "connect")
_START = ("container", "start")
_GONE = frozenset({("container", "die"), ("container", "destroy")})
_LEAVE = ("network", "disconnect")
# Podman sends no `connect` when it starts a container; its `init` comes once netavark has set
# up the container's networks, with the addresses already listed, before `start` (measured on
# 4.3, 5.4 and 5.8). Docker sends no `init`.
_INIT = ("container", "init")
# A container's static addresses (`--ip6`, compose's ipv6_address) are listed from its
# `create` on, before it is started: claimed then, its entry is in place well before its
# network's `connect`, which dockerd 28.5 sends only 9-36 ms before `docker run -d` returns.
# One that is never started is dropped by the sync after `patience`, as a connect that never
# runs is.
_CREATE = ("container", "create")
# A network just made is asked for at once (`networks`), so that its first container's claim
# needs no GET /networks of its own (measured on 28.5 under load: that extra request made the
# claim at `create` lose its ~200 ms lead).
_NEW_NETWORK = ("network", "create")


@dataclass
class Step:
    """What the events of one container in a batch come to."""

    gone: bool = False
    look: bool = False  # connected: ask Docker (a disconnect or start alone needs no asking)
    network: tuple[str, str] | None = None  # (ID, name) of the last `connect`, to ask about
    left: set[str] = field(default_factory=set)  # networks disconnected after the last look


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _kind(event: Mapping[str, Any]) -> tuple[str, str]:
    return _str(event.get("Type")), _str(event.get("Action"))


def steps(events: Iterable[Mapping[str, Any]]) -> dict[str, Step]:
    """Per container ID, in order of first appearance: the last word of its events counts, so a
    container that died before its `connect` was acted on is not proxied at all."""
    found: dict[str, Step] = {}
    for event in events:
        kind = _kind(event)
        actor = event.get("Actor")
        actor = actor if isinstance(actor, dict) else {}
        attributes = actor.get("Attributes")
        attributes = attributes if isinstance(attributes, dict) else {}
        if kind[0] == "network":
            cid, network = _str(attributes.get("container")), _str(attributes.get("name"))
        else:
            cid, network = _str(actor.get("ID")), ""
        if not cid or kind not in (_CONNECT, _INIT, _CREATE, _START, _LEAVE, *_GONE):
            continue
        step = found.setdefault(cid, Step())
        if kind in _GONE:
            found[cid] = Step(gone=True)
        elif kind == _LEAVE:
            step.left.add(network)
            if step.network is not None and step.network[1] == network:
                step.network = None
        elif kind == _START:
            step.gone = False
        elif kind in (_INIT, _CREATE):
            step.gone, step.look = False, True
        else:
            step.gone, step.look = False, True
            step.left.discard(network)
            step.network = (_str(actor.get("ID")), network)
    return found


Update = Callable[[Snapshot, str, list[Endpoint]], Snapshot]


class Instant:
    """`update(snapshot, container ID, endpoints)` changes that container's entries and returns
    the snapshot to plan from next; it raises V6genError (DockerError included) when it can't,
    and the full sync then does the work. `hold()` is the lock sync takes: held while Docker is
    asked and the entries changed, so no other run comes in between. `networks()`, when given,
    is Docker's networks now (GET /networks), asked when one is created."""

    def __init__(
        self,
        source: ContainerSource,
        update: Update,
        *,
        hold: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
        patience: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        networks: Callable[[], DockerFacts] | None = None,
    ) -> None:
        self._source = source
        self._update = update
        self._networks = networks
        self._hold = hold
        self._patience = patience
        self._clock = clock
        self._snapshot: Snapshot | None = None
        self._starting: dict[str, tuple[float, tuple[Endpoint, ...]]] = {}
        self._stopped: dict[str, float] = {}
        self._left: dict[tuple[str, str], float] = {}  # (ID, network) it was disconnected from

    def starting(self) -> list[Endpoint]:
        """Endpoints of containers connected but not (yet) seen running, for the full sync."""
        now = self._clock()
        for cid in [c for c, (t, _) in self._starting.items() if now - t > self._patience]:
            del self._starting[cid]
        return [e for _, found in self._starting.values() for e in found]

    def stopped(self) -> list[str]:
        """IDs of containers that died and may still be listed as running, for the full sync."""
        now = self._clock()
        for cid in [c for c, t in self._stopped.items() if now - t > self._patience]:
            del self._stopped[cid]
        return list(self._stopped)

    def left(self) -> list[tuple[str, str]]:
        """(container ID, network) of disconnects the listing may not show yet."""
        now = self._clock()
        for key in [k for k, t in self._left.items() if now - t > self._patience]:
            del self._left[key]
        return list(self._left)

    def forget(self) -> None:
        """Docker was away: what it was starting may never run, and no event would say so; its
        listing is the truth again."""
        self._starting.clear()
        self._stopped.clear()
        self._left.clear()

    def synced(self, snapshot: Snapshot | None) -> None:
        """A full sync planned from `snapshot` (None: it failed; the fast path waits for the
        next one rather than plan from a stale picture)."""
        self._snapshot = snapshot
        if snapshot is not None:
            for cid in snapshot.listed & self._starting.keys():
                del self._starting[cid]  # it runs: the listing speaks for it from now on
            for cid in self._stopped.keys() - snapshot.listed:
                del self._stopped[cid]  # gone from the listing too
            for key in self._left.keys() - snapshot.listed_on:
                del self._left[key]

    def react(
        self, events: Iterable[Mapping[str, Any]], more: Callable[[], list[Any]] | None = None
    ) -> None:
        """Act on a batch of events; `more()`, called once the lock is held (another run may
        have held it a while), gives what has arrived since, so that a container that died
        meanwhile is not proxied at all."""
        if self._snapshot is None:
            return
        batch = list(events)
        if self._networks is not None and any(_kind(e) == _NEW_NETWORK for e in batch):
            with self._hold():
                self._snapshot = replace(self._snapshot, docker=self._networks())
        if not any(s.look or s.gone or s.left for s in steps(batch).values()):
            return  # starts of containers already connected: nothing to ask or change
        with self._hold():
            todo = steps([*batch, *(more() if more else [])])
            for cid, step in todo.items():
                self._react(cid, step)

    def _react(self, cid: str, step: Step) -> None:
        assert self._snapshot is not None
        snapshot = self._snapshot
        known = [e for e in snapshot.endpoints if e.container_id == cid]
        if step.gone:
            found: list[Endpoint] = []
        elif step.look:
            found = self._source.starting_endpoints(cid, step.network)
        else:
            found = known
        found = [e for e in found if e.network not in step.left]
        now = self._clock()
        for network in step.left:
            self._left[(cid, network)] = now
        if step.network is not None:
            self._left.pop((cid, step.network[1]), None)
        if step.gone:
            self._stopped[cid] = self._clock()
            self._starting.pop(cid, None)
        else:
            self._stopped.pop(cid, None)
        if set(found) == set(known):
            return
        self._snapshot = self._update(snapshot, cid, found)
        if found:
            self._starting[cid] = (self._clock(), tuple(found))
