"""Watcher behaviour the lab tests (tests/lab/test_watch.py) found missing: owed networkd
reloads (event syncs write files and add kernel entries at once, the reload waits for the burst
to settle; the lab measured 5-7 reloads for a 50-container `compose up` when every sync
reloaded) and the watchdog while Docker is away."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from v6gen.errors import DockerError, NetworkdError
from v6gen.notify import Notifier
from v6gen.watch import Timing, Watcher

T = Timing(debounce=0.02, max_delay=0.1, settle=0.3, reload_max=1.0, backoff_min=0.01)
_END = object()


class Stream:
    def __init__(self) -> None:
        self.items: queue.Queue[Any] = queue.Queue()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (item := self.items.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item

    def close(self) -> None:
        self.items.put(_END)


class Rig:
    def __init__(self, timing: Timing = T) -> None:
        self.streams: list[Stream] = []
        self.syncs: list[tuple[float, str]] = []
        self.reloads: list[float] = []
        self.logs: list[str] = []
        self.reload_errors = 0
        self.watcher = Watcher(
            self.subscribe, self.resync, self.logs.append, timing=timing, reload=self.reload
        )
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)

    def subscribe(self) -> Stream:
        self.streams.append(Stream())
        return self.streams[-1]

    def resync(self, reason: str) -> bool:
        self.syncs.append((time.monotonic(), reason))
        return True  # every sync wrote a drop-in

    def reload(self) -> None:
        if self.reload_errors:
            self.reload_errors -= 1
            raise NetworkdError("bus gone", "")
        self.reloads.append(time.monotonic())

    def event(self) -> None:
        self.streams[-1].items.put({"Type": "container", "Action": "start"})

    def wait(self, what: str, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(getattr(self, what)) < n:
            assert time.monotonic() < deadline, f"{what}: {getattr(self, what)}"
            time.sleep(0.005)

    def __enter__(self) -> Rig:
        self.thread.start()
        self.wait("syncs", 1)
        return self

    def __exit__(self, *_: object) -> None:
        self.watcher.stop()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


def test_start_sync_reloads_at_once() -> None:
    with Rig() as r:
        r.wait("reloads", 1, timeout=0.2)  # not after `settle`
        assert [reason for _, reason in r.syncs] == ["start"]


def test_a_long_burst_owes_one_reload_after_it_settles() -> None:
    with Rig(Timing(debounce=0.02, max_delay=0.1, settle=0.3, reload_max=5.0)) as r:
        r.wait("reloads", 1)
        for _ in range(6):  # 0.6 s of events, 0.15 s apart: several syncs
            r.event()
            time.sleep(0.15)
        syncs_during = len(r.syncs) - 1
        assert syncs_during >= 3 and len(r.reloads) == 1
        r.wait("reloads", 2, timeout=1.0)
        last_sync = r.syncs[-1][0]
        assert r.reloads[-1] - last_sync >= T.settle - 0.02
        time.sleep(0.5)
        assert len(r.reloads) == 2


def test_reload_max_bounds_the_wait_in_an_endless_burst() -> None:
    with Rig() as r:
        r.wait("reloads", 1)
        first = time.monotonic()
        while time.monotonic() - first < 1.6:
            r.event()
            time.sleep(0.05)
        assert len(r.reloads) >= 2, "a burst longer than reload_max must reload once meanwhile"
        assert r.reloads[1] - first <= T.reload_max + 0.3


def test_stop_does_the_owed_reload_first() -> None:
    with Rig(Timing(debounce=0.02, max_delay=0.1, settle=30, reload_max=60)) as r:
        r.wait("reloads", 1)
        r.event()
        r.wait("syncs", 2)
        assert len(r.reloads) == 1
    assert len(r.reloads) == 2


def test_lost_docker_does_the_owed_reload_before_reconnecting() -> None:
    with Rig(Timing(debounce=0.02, max_delay=0.1, settle=30, reload_max=60)) as r:
        r.wait("reloads", 1)
        r.event()
        r.wait("syncs", 2)
        r.streams[-1].items.put(DockerError("stream lost", ""))
        r.wait("reloads", 2)
        assert any("lost Docker (stream lost)" in line for line in r.logs)


def test_a_failed_reload_is_logged_and_retried_later() -> None:
    with Rig(Timing(debounce=0.02, max_delay=0.1, settle=0.05, reload_max=0.4)) as r:
        r.wait("reloads", 1)
        r.reload_errors = 1
        r.event()
        r.wait("logs", 1)
        assert "networkd was not reloaded: bus gone" in r.logs[0]
        failed = time.monotonic()
        r.wait("reloads", 2)
        assert r.reloads[1] - failed >= 0.3


def test_lost_during_a_burst_logs_the_reason_not_an_event() -> None:
    with Rig() as r:
        r.event()
        r.streams[-1].items.put(DockerError("stream lost", ""))
        r.wait("syncs", 3)  # the burst's sync, then the reconnect's
        lost = [line for line in r.logs if "lost Docker" in line]
        assert lost == ["lost Docker (stream lost); entries kept, reconnecting"]


def test_the_watchdog_is_fed_while_waiting_for_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(0.05)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 0.05 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    def down() -> Stream:
        raise DockerError("connection refused", "")

    slow = Timing(backoff_min=10, backoff_max=10)
    watcher = Watcher(down, lambda _: None, lambda _: None, Notifier(path), slow)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    pings = 0
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            pings += server.recv(200) == b"WATCHDOG=1"
    watcher.stop()
    thread.join(timeout=5)
    server.close()
    assert not thread.is_alive()
    assert pings >= 5, f"{pings} WATCHDOG=1 in 0.6 s of a 10 s backoff wait"
