"""The Watcher in virtual time (vclock.py): debounce, backoff and bursts are exact, whatever the
machine's speed."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from vclock import START, Stream, VirtualTime

from v6gen.errors import DockerError, V6genError
from v6gen.notify import Notifier
from v6gen.watch import Timing, Watcher

FAST = Timing(debounce=0.05, max_delay=0.5, backoff_min=0.01, backoff_max=0.05)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualTime:
    return VirtualTime.install(monkeypatch)


class Harness:
    def __init__(
        self,
        clock: VirtualTime,
        fail_subscribes: int = 0,
        timing: Timing = FAST,
        notifier: Notifier | None = None,
        reconfigure: bool = True,
    ) -> None:
        self.clock = clock
        self.streams: list[Stream] = []
        self.reasons: list[str] = []
        self.logs: list[str] = []
        self.fail_subscribes = fail_subscribes
        self.sync_error: V6genError | None = None
        # What reconfigure() answers (True: Docker moved), or raises; and how often it ran.
        self.moved: bool | V6genError = False
        self.reconfigures = 0
        self.watcher = Watcher(
            self.subscribe,
            self.resync,
            self.logs.append,
            notifier,
            timing=timing,
            reconfigure=self.reconfigure if reconfigure else None,
        )
        self.thread: threading.Thread | None = None

    def reconfigure(self) -> bool:
        self.reconfigures += 1
        if isinstance(self.moved, V6genError):
            raise self.moved
        return self.moved

    def subscribe(self) -> Stream:
        if self.fail_subscribes:
            self.fail_subscribes -= 1
            raise DockerError("connection refused", "")
        self.streams.append(self.clock.stream())
        return self.streams[-1]

    def resync(self, reason: str) -> None:
        error, self.sync_error = self.sync_error, None
        if error:
            raise error
        self.reasons.append(reason)

    def wait_syncs(self, n: int, limit: float = 3600.0) -> None:
        self.clock.run_until(lambda: len(self.reasons) >= n, limit)

    def logged(self, text: str) -> int:
        return sum(text in line for line in self.logs)

    def __enter__(self) -> Harness:
        self.thread = self.clock.start(self.watcher)
        return self

    def __exit__(self, *_: object) -> None:
        assert self.thread is not None
        self.watcher.stop()
        self.thread.join(timeout=60)  # a hang guard: stop needs no time to pass
        assert not self.thread.is_alive()


def event(action: str = "start") -> dict[str, Any]:
    return {"Type": "container", "Action": action, "Actor": {"ID": "c1"}}


def test_syncs_at_start_and_once_per_burst(clock: VirtualTime) -> None:
    with Harness(clock) as h:
        h.wait_syncs(1)
        for _ in range(50):  # 0.49 s of events, 0.01 s apart: below debounce and max_delay
            h.streams[0].put(event())
            clock.run_for(0.01)
        h.wait_syncs(2)
        clock.run_for(10)
        assert h.reasons == ["start", "events"]


def test_lost_stream_reconnects_and_resyncs(clock: VirtualTime) -> None:
    with Harness(clock) as h:
        h.wait_syncs(1)
        h.streams[0].put(DockerError("stream lost", ""))
        h.wait_syncs(2)
        assert h.reasons == ["start", "reconnect"] and len(h.streams) == 2
        assert h.logged("lost Docker") == 1


def test_docker_down_at_start_retries_with_backoff(clock: VirtualTime) -> None:
    with Harness(clock, fail_subscribes=3) as h:
        h.wait_syncs(1)
        assert h.reasons == ["reconnect"]
        assert h.logged("docker unreachable") == 3
        # 0.01, 0.02, then 0.04 s: doubling from backoff_min
        assert clock.now - START == pytest.approx(0.07)


def test_hup_forces_a_resync(clock: VirtualTime) -> None:
    with Harness(clock) as h:
        h.wait_syncs(1)
        h.watcher.hup()
        h.wait_syncs(2)
        assert h.reasons[1] == "hup"


def test_hup_that_moves_docker_resubscribes_before_the_resync(clock: VirtualTime) -> None:
    with Harness(clock) as h:
        h.wait_syncs(1)
        h.moved = True
        h.watcher.hup()
        h.wait_syncs(2)
        assert h.reconfigures == 1
        assert h.reasons == ["start", "reconnect"]  # one full sync, from the new stream
        assert len(h.streams) == 2 and h.streams[0].closed


def test_hup_with_a_broken_config_keeps_the_old_one_and_resyncs(clock: VirtualTime) -> None:
    from v6gen.errors import ConfigError

    with Harness(clock) as h:
        h.wait_syncs(1)
        h.moved = ConfigError("/etc/v6gen/config.yaml:3: bad", "")
        h.watcher.hup()
        h.wait_syncs(2)
        assert h.reasons == ["start", "hup"] and len(h.streams) == 1
        assert h.logged("config not reloaded, keeping the previous one") == 1


def test_hup_while_docker_is_away_rereads_the_config_and_retries_at_once(
    clock: VirtualTime,
) -> None:
    """A wrong docker_host corrected by the admin: the retry must not wait out the backoff,
    nor keep asking the old place."""
    slow = Timing(backoff_min=30, backoff_max=30)
    with Harness(clock, fail_subscribes=1, timing=slow) as h:
        clock.run_until(lambda: h.logged("docker unreachable") == 1)
        asleep = clock.now
        h.moved = True
        h.watcher.hup()
        h.wait_syncs(1)
        assert h.reconfigures == 1 and h.reasons == ["reconnect"]
        assert clock.now == asleep  # not a moment of the 30 s backoff waited out


def test_docker_gone_during_sync_reconnects(clock: VirtualTime) -> None:
    with Harness(clock) as h:
        h.wait_syncs(1)
        h.sync_error = DockerError("refused", "")
        h.streams[0].put(event("die"))
        h.wait_syncs(2)
        assert h.reasons == ["start", "reconnect"]


def test_other_errors_are_logged_and_watching_goes_on(clock: VirtualTime) -> None:
    with Harness(clock) as h:
        h.wait_syncs(1)
        h.sync_error = V6genError("disk full", "free some space")
        h.streams[0].put(event())
        clock.run_until(lambda: h.logged("sync failed") == 1)
        h.streams[0].put(event())
        h.wait_syncs(2)
        assert h.logged("sync failed: disk full (hint: free some space)") == 1
        assert h.reasons == ["start", "events"] and len(h.streams) == 1


def test_stop_while_waiting_for_docker_is_prompt(clock: VirtualTime) -> None:
    slow = Timing(backoff_min=30, backoff_max=30)
    h = Harness(clock, fail_subscribes=100, timing=slow, reconfigure=False)
    thread = clock.start(h.watcher)
    clock.run_until(lambda: h.logged("docker unreachable") == 1)
    asleep = clock.now
    h.watcher.stop()
    thread.join(timeout=60)  # a hang guard: virtual time stands still, only stop can end it
    assert not thread.is_alive() and clock.now == asleep


def test_notifier_sends_ready_to_the_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier(path)
    assert n.watchdog_interval == 1.0
    n.send(ready="1", status="following Docker events")
    assert server.recv(100) == b"READY=1\nSTATUS=following Docker events"
    server.close()


def test_ready_even_while_docker_is_down(tmp_path: Path, clock: VirtualTime) -> None:
    """A unit that never became ready would hold up boot and be restarted in a loop."""
    path = str(tmp_path / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(60)  # a hang guard
    h = Harness(clock, fail_subscribes=2, notifier=Notifier(path), reconfigure=False)
    thread = clock.start(h.watcher)
    try:
        first = server.recv(200)
        assert first.startswith(b"READY=1\nSTATUS=waiting for Docker: connection refused")
        h.wait_syncs(1)
        messages = [server.recv(200) for _ in range(2)]
        assert messages[-1] == b"READY=1\nSTATUS=following Docker events"
    finally:
        h.watcher.stop()
        thread.join(timeout=60)
        server.close()


def test_a_sync_that_keeps_failing_is_retried_with_backoff(clock: VirtualTime) -> None:
    class AlwaysFailing(Harness):
        def resync(self, reason: str) -> None:
            raise DockerError("500 from /containers/json", "")

    slow = Timing(debounce=0.05, max_delay=0.5, backoff_min=0.1, backoff_max=0.2)
    h = AlwaysFailing(clock, timing=slow, reconfigure=False)
    thread = clock.start(h.watcher)
    clock.run_for(1.0)
    h.watcher.stop()
    thread.join(timeout=60)
    # Tries at 0, 0.1, 0.3, 0.5, 0.7 and 0.9 s: a handful in a second, not thousands.
    assert len(h.streams) == 6, len(h.streams)


def test_a_burst_of_rule_changes_alone_is_one_sync(clock: VirtualTime) -> None:
    """`ufw reload` with no Docker event: hundreds of changes from the rule monitor, one sync."""
    with Harness(clock) as h:
        h.wait_syncs(1)
        for _ in range(300):
            h.watcher.rules_changed()
        h.wait_syncs(2)
        clock.run_for(10)
        assert h.reasons == ["start", "rules"]


def test_rule_changes_and_events_in_one_burst_are_one_events_sync(clock: VirtualTime) -> None:
    """Docker's own rules change as it starts a container: one sync, for the events."""
    with Harness(clock) as h:
        h.wait_syncs(1)
        h.watcher.rules_changed()
        clock.run_for(0.01)
        h.streams[0].put(event())
        h.watcher.rules_changed()
        h.wait_syncs(2)
        clock.run_for(10)
        assert h.reasons == ["start", "events"]


def test_address_changes_alone_are_one_addresses_sync(clock: VirtualTime) -> None:
    """A renumbering is a few address notifications and no Docker event: one sync, which
    reloads networkd at once (no burst of events to wait for)."""
    with Harness(clock) as h:
        h.wait_syncs(1)
        h.watcher.addresses_changed()
        h.watcher.rules_changed()
        h.watcher.addresses_changed()
        h.wait_syncs(2)
        clock.run_for(10)
        assert h.reasons == ["start", "addresses"]
