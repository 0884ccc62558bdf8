"""Watcher behaviour the lab tests (tests/lab/test_watch.py) found missing: owed networkd
reloads (event syncs write files and add kernel entries at once, the reload waits for the burst
to settle; the lab measured 5-7 reloads for a 50-container `compose up` when every sync
reloaded) and the watchdog while Docker is away."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import pytest
from vclock import Stream, VirtualTime

from v6gen.errors import DockerError, NetworkdError
from v6gen.notify import Notifier
from v6gen.watch import Timing, Watcher

T = Timing(debounce=0.02, max_delay=0.1, settle=0.3, reload_max=1.0, backoff_min=0.01)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualTime:
    """Virtual time (vclock.py): settle, reload_max and the watchdog are exact, whatever the
    machine's speed."""
    return VirtualTime.install(monkeypatch)


class Rig:
    def __init__(self, clock: VirtualTime, timing: Timing = T) -> None:
        self.clock = clock
        self.streams: list[Stream] = []
        self.syncs: list[tuple[float, str]] = []
        self.reloads: list[float] = []
        self.logs: list[str] = []
        self.reload_errors = 0
        self.watcher = Watcher(
            self.subscribe, self.resync, self.logs.append, timing=timing, reload=self.reload
        )
        self.thread: threading.Thread | None = None

    def subscribe(self) -> Stream:
        self.streams.append(self.clock.stream())
        return self.streams[-1]

    def resync(self, reason: str) -> bool:
        self.syncs.append((self.clock.now, reason))
        return True  # every sync wrote a drop-in

    def reload(self) -> None:
        if self.reload_errors:
            self.reload_errors -= 1
            raise NetworkdError("bus gone", "")
        self.reloads.append(self.clock.now)

    def event(self) -> None:
        self.streams[-1].put({"Type": "container", "Action": "start"})

    def wait(self, what: str, n: int, limit: float = 3600.0) -> None:
        """Let virtual time pass until `what` has n entries."""
        self.clock.run_until(lambda: len(getattr(self, what)) >= n, limit)

    def __enter__(self) -> Rig:
        self.thread = self.clock.start(self.watcher)
        self.wait("syncs", 1)
        return self

    def __exit__(self, *_: object) -> None:
        assert self.thread is not None
        self.watcher.stop()
        self.thread.join(timeout=60)  # a hang guard: stop needs no time to pass
        assert not self.thread.is_alive()


def test_start_sync_reloads_at_once(clock: VirtualTime) -> None:
    with Rig(clock) as r:
        r.wait("reloads", 1)
        assert r.reloads == [r.syncs[0][0]]  # not after `settle`
        assert [reason for _, reason in r.syncs] == ["start"]


def test_a_long_burst_owes_one_reload_after_it_settles(clock: VirtualTime) -> None:
    with Rig(clock, Timing(debounce=0.02, max_delay=0.1, settle=0.3, reload_max=5.0)) as r:
        r.wait("reloads", 1)
        for _ in range(6):  # 0.9 s of events, 0.15 s apart: several syncs
            r.event()
            clock.run_for(0.15)
        syncs_during = len(r.syncs) - 1
        assert syncs_during == 6 and len(r.reloads) == 1
        r.wait("reloads", 2, limit=1.0)
        last_sync = r.syncs[-1][0]
        assert r.reloads[-1] - last_sync == pytest.approx(T.settle)
        clock.run_for(10)
        assert len(r.reloads) == 2


def test_rule_changes_amid_a_burst_leave_the_reload_to_the_quiet(clock: VirtualTime) -> None:
    """Docker rewrites its own rules while a compose burst goes on: a sync for those changes
    alone must not reload networkd in the middle of the burst."""
    with Rig(clock, Timing(debounce=0.02, max_delay=0.1, settle=0.3, reload_max=5.0)) as r:
        r.wait("reloads", 1)
        for _ in range(3):
            r.event()
            clock.run_for(0.15)
            r.watcher.rules_changed()
            clock.run_for(0.15)
        assert [reason for _, reason in r.syncs[1:]] == ["events", "rules"] * 3
        assert len(r.reloads) == 1
        r.wait("reloads", 2, limit=1.0)
        assert r.reloads[-1] - r.syncs[-1][0] == pytest.approx(T.settle)


def test_reload_max_bounds_the_wait_in_an_endless_burst(clock: VirtualTime) -> None:
    with Rig(clock) as r:
        r.wait("reloads", 1)
        first = clock.now
        while clock.now - first < 1.6:
            r.event()
            clock.run_for(0.05)
        assert len(r.reloads) >= 2, "a burst longer than reload_max must reload once meanwhile"
        assert r.reloads[1] - first <= T.reload_max + 0.3


def test_stop_does_the_owed_reload_first(clock: VirtualTime) -> None:
    with Rig(clock, Timing(debounce=0.02, max_delay=0.1, settle=30, reload_max=60)) as r:
        r.wait("reloads", 1)
        r.event()
        r.wait("syncs", 2)
        clock.settle()
        assert len(r.reloads) == 1
    assert len(r.reloads) == 2


def test_lost_docker_does_the_owed_reload_before_reconnecting(clock: VirtualTime) -> None:
    with Rig(clock, Timing(debounce=0.02, max_delay=0.1, settle=30, reload_max=60)) as r:
        r.wait("reloads", 1)
        r.event()
        r.wait("syncs", 2)
        r.streams[-1].put(DockerError("stream lost", ""))
        r.wait("reloads", 2, limit=1.0)  # not after settle's 30 s
        assert any("lost Docker (stream lost)" in line for line in r.logs)


def test_a_failed_reload_is_logged_and_retried_later(clock: VirtualTime) -> None:
    with Rig(clock, Timing(debounce=0.02, max_delay=0.1, settle=0.05, reload_max=0.4)) as r:
        r.wait("reloads", 1)
        r.reload_errors = 1
        r.event()
        r.wait("logs", 1)
        assert "networkd was not reloaded: bus gone" in r.logs[0]
        failed = clock.now
        r.wait("reloads", 2)
        assert r.reloads[1] - failed == pytest.approx(0.4)  # reload_max after the failure


def test_lost_during_a_burst_logs_the_reason_not_an_event(clock: VirtualTime) -> None:
    with Rig(clock) as r:
        r.event()
        r.streams[-1].put(DockerError("stream lost", ""))
        r.wait("syncs", 3)  # the burst's sync, then the reconnect's
        lost = [line for line in r.logs if "lost Docker" in line]
        assert lost == ["lost Docker (stream lost); entries kept, reconnecting"]


def test_the_watchdog_is_fed_while_waiting_for_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: VirtualTime
) -> None:
    path = str(tmp_path / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.setblocking(False)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    def down() -> Stream:
        raise DockerError("connection refused", "")

    slow = Timing(backoff_min=10, backoff_max=10)
    watcher = Watcher(down, lambda _: None, lambda _: None, Notifier(path), slow)
    thread = clock.start(watcher)
    messages: list[bytes] = []
    for _ in range(12):  # read as it goes: a datagram socket queues only a few
        clock.run_for(0.05)
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(server.recv(200))
    watcher.stop()
    thread.join(timeout=60)
    server.close()
    assert not thread.is_alive()
    pings = messages.count(b"WATCHDOG=1")
    assert pings == 12, f"{pings} WATCHDOG=1 in 0.6 s of a 10 s backoff wait: {messages}"
