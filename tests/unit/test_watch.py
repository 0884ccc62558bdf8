from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from v6gen.errors import DockerError, V6genError
from v6gen.notify import Notifier
from v6gen.watch import Timing, Watcher

FAST = Timing(debounce=0.05, max_delay=0.5, backoff_min=0.01, backoff_max=0.05)
_END = object()


class FakeStream:
    def __init__(self) -> None:
        self.items: queue.Queue[Any] = queue.Queue()
        self.closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            item = self.items.get()
            if item is _END or self.closed:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self) -> None:
        self.closed = True
        self.items.put(_END)


class Harness:
    def __init__(self, fail_subscribes: int = 0, timing: Timing = FAST) -> None:
        self.streams: list[FakeStream] = []
        self.reasons: list[str] = []
        self.logs: list[str] = []
        self.fail_subscribes = fail_subscribes
        self.sync_error: V6genError | None = None
        self.synced = threading.Event()
        # What reconfigure() answers (True: Docker moved), or raises; and how often it ran.
        self.moved: bool | V6genError = False
        self.reconfigures = 0
        self.watcher = Watcher(
            self.subscribe,
            self.resync,
            self.logs.append,
            timing=timing,
            reconfigure=self.reconfigure,
        )
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)

    def reconfigure(self) -> bool:
        self.reconfigures += 1
        if isinstance(self.moved, V6genError):
            raise self.moved
        return self.moved

    def subscribe(self) -> FakeStream:
        if self.fail_subscribes:
            self.fail_subscribes -= 1
            raise DockerError("connection refused", "")
        self.streams.append(FakeStream())
        return self.streams[-1]

    def resync(self, reason: str) -> None:
        error, self.sync_error = self.sync_error, None
        if error:
            raise error
        self.reasons.append(reason)
        self.synced.set()

    def wait_syncs(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.reasons) < n:
            assert time.monotonic() < deadline, f"only {self.reasons} after {timeout} s"
            time.sleep(0.005)

    def __enter__(self) -> Harness:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.watcher.stop()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


def event(action: str = "start") -> dict[str, Any]:
    return {"Type": "container", "Action": action, "Actor": {"ID": "c1"}}


def test_syncs_at_start_and_once_per_burst() -> None:
    with Harness() as h:
        h.wait_syncs(1)
        for _ in range(50):
            h.streams[0].items.put(event())
        h.wait_syncs(2)
        time.sleep(0.3)
        assert h.reasons == ["start", "events"]


def test_lost_stream_reconnects_and_resyncs() -> None:
    with Harness() as h:
        h.wait_syncs(1)
        h.streams[0].items.put(DockerError("stream lost", ""))
        h.wait_syncs(2)
        assert h.reasons == ["start", "reconnect"] and len(h.streams) == 2
        assert any("lost Docker" in line for line in h.logs)


def test_docker_down_at_start_retries_with_backoff() -> None:
    with Harness(fail_subscribes=3) as h:
        h.wait_syncs(1)
        assert h.reasons == ["reconnect"]
        assert sum("docker unreachable" in line for line in h.logs) == 3


def test_hup_forces_a_resync() -> None:
    with Harness() as h:
        h.wait_syncs(1)
        h.watcher.hup()
        h.wait_syncs(2)
        assert h.reasons[1] == "hup"


def test_hup_that_moves_docker_resubscribes_before_the_resync() -> None:
    with Harness() as h:
        h.wait_syncs(1)
        h.moved = True
        h.watcher.hup()
        h.wait_syncs(2)
        assert h.reconfigures == 1
        assert h.reasons == ["start", "reconnect"]  # one full sync, from the new stream
        assert len(h.streams) == 2 and h.streams[0].closed


def test_hup_with_a_broken_config_keeps_the_old_one_and_resyncs() -> None:
    from v6gen.errors import ConfigError

    with Harness() as h:
        h.wait_syncs(1)
        h.moved = ConfigError("/etc/v6gen/config.yaml:3: bad", "")
        h.watcher.hup()
        h.wait_syncs(2)
        assert h.reasons == ["start", "hup"] and len(h.streams) == 1
        assert any("config not reloaded, keeping the previous one" in line for line in h.logs)


def test_hup_while_docker_is_away_rereads_the_config_and_retries_at_once() -> None:
    """A wrong docker_host corrected by the admin: the retry must not wait out the backoff,
    nor keep asking the old place."""
    slow = Timing(backoff_min=30, backoff_max=30)
    with Harness(fail_subscribes=1, timing=slow) as h:
        deadline = time.monotonic() + 5
        while not any("docker unreachable" in line for line in h.logs):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        h.moved = True
        h.watcher.hup()
        h.wait_syncs(1, timeout=5)
        assert h.reconfigures == 1 and h.reasons == ["reconnect"]


def test_docker_gone_during_sync_reconnects() -> None:
    with Harness() as h:
        h.wait_syncs(1)
        h.sync_error = DockerError("refused", "")
        h.streams[0].items.put(event("die"))
        h.wait_syncs(2)
        assert h.reasons == ["start", "reconnect"]


def test_other_errors_are_logged_and_watching_goes_on() -> None:
    with Harness() as h:
        h.wait_syncs(1)
        h.sync_error = V6genError("disk full", "free some space")
        h.streams[0].items.put(event())
        time.sleep(0.3)
        h.streams[0].items.put(event())
        h.wait_syncs(2)
        assert any("sync failed: disk full (hint: free some space)" in x for x in h.logs)


def test_stop_while_waiting_for_docker_is_prompt() -> None:
    slow = Timing(backoff_min=30, backoff_max=30)
    h = Harness(fail_subscribes=100)
    h.watcher = Watcher(h.subscribe, h.resync, h.logs.append, timing=slow)
    thread = threading.Thread(target=h.watcher.run, daemon=True)
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    h.watcher.stop()
    thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - started < 1


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


def test_ready_even_while_docker_is_down(tmp_path: Path) -> None:
    """A unit that never became ready would hold up boot and be restarted in a loop."""
    path = str(tmp_path / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(5)
    h = Harness(fail_subscribes=2)
    h.watcher = Watcher(h.subscribe, h.resync, h.logs.append, Notifier(path), timing=FAST)
    thread = threading.Thread(target=h.watcher.run, daemon=True)
    thread.start()
    try:
        first = server.recv(200)
        assert first.startswith(b"READY=1\nSTATUS=waiting for Docker: connection refused")
        h.wait_syncs(1)
        messages = [server.recv(200) for _ in range(2)]
        assert messages[-1] == b"READY=1\nSTATUS=following Docker events"
    finally:
        h.watcher.stop()
        thread.join(timeout=5)
        server.close()


def test_a_sync_that_keeps_failing_is_retried_with_backoff() -> None:
    class AlwaysFailing(Harness):
        def resync(self, reason: str) -> None:
            raise DockerError("500 from /containers/json", "")

    slow = Timing(debounce=0.05, max_delay=0.5, backoff_min=0.1, backoff_max=0.2)
    h = AlwaysFailing()
    h.watcher = Watcher(h.subscribe, h.resync, h.logs.append, timing=slow)
    thread = threading.Thread(target=h.watcher.run, daemon=True)
    thread.start()
    time.sleep(1.0)
    h.watcher.stop()
    thread.join(timeout=5)
    # 0.1 + 0.2 + 0.2 + ... s between attempts: a handful in a second, not thousands.
    assert 2 <= len(h.streams) <= 8, len(h.streams)
