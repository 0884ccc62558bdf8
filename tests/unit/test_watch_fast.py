"""The Watcher hands every event to the fast path at once, before any debounce, in batches of
what had already arrived (virtual time, vclock.py: exact whatever the machine's speed)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from vclock import Stream, VirtualTime

from v6gen.errors import DockerError, V6genError
from v6gen.watch import Timing, Watcher

T = Timing(debounce=0.1, max_delay=1.0, backoff_min=0.01)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualTime:
    return VirtualTime.install(monkeypatch)


class Rig:
    def __init__(self, clock: VirtualTime, react_error: V6genError | None = None) -> None:
        self.clock = clock
        self.streams: list[Stream] = []
        self.syncs: list[tuple[float, str]] = []
        self.batches: list[tuple[float, list[str]]] = []
        self.logs: list[str] = []
        self.react_error = react_error
        self.watcher = Watcher(
            self.subscribe, self.resync, self.logs.append, timing=T, react=self.react
        )
        self.thread: threading.Thread | None = None

    def subscribe(self) -> Stream:
        self.streams.append(self.clock.stream())
        return self.streams[-1]

    def resync(self, reason: str) -> bool:
        self.syncs.append((self.clock.now, reason))
        return False

    def react(self, events: list[Any], more: Callable[[], list[Any]]) -> None:
        self.batches.append((self.clock.now, [e["Action"] for e in [*events, *more()]]))
        if self.react_error is not None:
            raise self.react_error

    def put(self, *actions: str) -> None:
        for action in actions:
            self.streams[-1].put({"Type": "container", "Action": action, "Actor": {"ID": "c"}})

    def __enter__(self) -> Rig:
        self.thread = self.clock.start(self.watcher)
        self.clock.run_until(lambda: len(self.syncs) >= 1)
        return self

    def __exit__(self, *_: object) -> None:
        assert self.thread is not None
        self.watcher.stop()
        self.thread.join(timeout=60)  # a hang guard: stop needs no time to pass
        assert not self.thread.is_alive()


def test_events_reach_the_fast_path_before_the_debounced_sync(clock: VirtualTime) -> None:
    with Rig(clock) as r:
        t0 = clock.now
        r.put("start")
        clock.run_until(lambda: len(r.syncs) >= 2)
        assert r.batches == [(t0, ["start"])]  # at once: no virtual time passed
        assert r.syncs[1] == (t0 + T.debounce, "events")  # and the sync follows as before


def test_what_arrived_together_is_one_batch_and_later_events_are_acted_on_at_once(
    clock: VirtualTime,
) -> None:
    with Rig(clock) as r:
        t0 = clock.now
        r.put("connect", "start", "die")
        clock.settle()
        clock.run_for(0.05)  # within the debounce
        r.put("destroy")
        clock.run_until(lambda: len(r.syncs) >= 2)
        assert r.batches[0][0] == t0
        assert [a for _, actions in r.batches for a in actions] == [
            "connect",
            "start",
            "die",
            "destroy",
        ]
        assert r.batches[-1] == (t0 + 0.05, ["destroy"])
        assert len(r.syncs) == 2


def test_a_failing_fast_path_is_logged_and_the_sync_still_comes(clock: VirtualTime) -> None:
    with Rig(clock, react_error=DockerError("refused", "is dockerd running?")) as r:
        r.put("start")
        clock.run_until(lambda: len(r.syncs) >= 2)
        assert r.logs == ["fast path failed, the sync does it: refused (hint: is dockerd running?)"]


def test_stop_right_behind_an_event_is_still_honoured(clock: VirtualTime) -> None:
    r = Rig(clock)
    thread = clock.start(r.watcher)
    clock.run_until(lambda: len(r.syncs) >= 1)
    r.put("start")
    r.watcher.stop()
    thread.join(timeout=60)
    assert not thread.is_alive()


def test_a_new_network_goes_to_the_fast_path_and_starts_no_sync(clock: VirtualTime) -> None:
    with Rig(clock) as r:
        t0 = clock.now
        r.streams[-1].put({"Type": "network", "Action": "create", "Actor": {"ID": "n"}})
        r.put("create")  # its first container, a moment later
        clock.run_until(lambda: len(r.syncs) >= 2)
        assert [b for _, b in r.batches] == [["create"], ["create"]]
        assert r.batches[0][0] == t0  # the network at once, and no sync for it alone
        assert r.syncs[1:] == [(t0 + T.debounce, "events")]  # the container's sync
