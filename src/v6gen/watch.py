"""`v6gen watch`: follow Docker events and run the same sync as `v6gen sync`.

Bursts are coalesced (a `compose up` of 50 services is one sync, one networkd reload). When
dockerd goes away the files and kernel entries stay as they are; the watcher reconnects with
backoff and resyncs. SIGHUP forces a resync; SIGTERM and SIGINT end it cleanly.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from v6gen.errors import DockerError, V6genError
from v6gen.notify import Notifier


class EventStream(Protocol):
    def __iter__(self) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Timing:
    debounce: float = 0.1  # quiet time that ends a burst
    max_delay: float = 1.0  # a burst never delays the sync longer than this
    backoff_min: float = 0.5
    backoff_max: float = 30.0


_LOST, _EVENT, _HUP, _STOP = "lost", "event", "hup", "stop"


class Watcher:
    def __init__(
        self,
        subscribe: Callable[[], EventStream],
        resync: Callable[[str], None],
        log: Callable[[str], None],
        notifier: Notifier | None = None,
        timing: Timing = Timing(),
    ) -> None:
        self._subscribe = subscribe
        self._resync = resync
        self._log = log
        self._notifier = notifier or Notifier("")
        self._timing = timing
        # (kind, payload, generation): the generation tells the current stream's messages from
        # leftovers of a stream that was already given up.
        self._queue: queue.Queue[tuple[str, Any, int]] = queue.Queue()
        self._generation = 0
        self._stopping = threading.Event()
        self._ready = False
        self.syncs = 0

    # Thread-safe entry points (signal handlers, tests).
    def stop(self) -> None:
        self._stopping.set()
        self._queue.put((_STOP, None, -1))

    def hup(self) -> None:
        self._queue.put((_HUP, None, -1))

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.hup())

    def run(self) -> None:
        delay = self._timing.backoff_min
        reason = "start"
        while not self._stopping.is_set():
            try:
                stream = self._subscribe()
            except DockerError as exc:
                self._log(f"docker unreachable ({exc.message}); entries kept, retry in {delay:g} s")
                self._notifier.send(status=f"waiting for Docker: {exc.message}")
                self._sleep(delay)
                delay = min(delay * 2, self._timing.backoff_max)
                reason = "reconnect"
                continue
            delay = self._timing.backoff_min
            self._generation += 1
            reader = threading.Thread(
                target=self._read, args=(stream, self._generation), daemon=True
            )
            reader.start()
            try:
                # Subscribed first, synced second: nothing that starts in between is missed.
                if self._sync(reason):
                    self._follow()
            finally:
                stream.close()
                reader.join(timeout=2)
            reason = "reconnect"
        self._notifier.send(stopping="1", status="stopping")

    def _read(self, stream: Iterable[Any], generation: int) -> None:
        try:
            for event in stream:
                self._queue.put((_EVENT, event, generation))
            self._queue.put((_LOST, "event stream ended", generation))
        except DockerError as exc:
            self._queue.put((_LOST, exc.message, generation))

    def _get(self, timeout: float | None) -> tuple[str, Any]:
        """The next message for the current stream; raises queue.Empty on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            kind, payload, generation = self._queue.get(timeout=left)
            if generation in (-1, self._generation):
                return kind, payload

    def _sync(self, reason: str) -> bool:
        """False when Docker turned out to be unreachable (so: reconnect)."""
        try:
            self._resync(reason)
        except DockerError as exc:
            self._log(f"sync failed, docker unreachable: {exc.message}; entries kept")
            return False
        except V6genError as exc:
            self._log(f"sync failed: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""))
        self.syncs += 1
        if not self._ready:
            self._ready = True
            self._notifier.send(ready="1", status="following Docker events")
        return True

    def _follow(self) -> None:
        interval = self._notifier.watchdog_interval
        while not self._stopping.is_set():
            try:
                kind, payload = self._get(interval)
            except queue.Empty:
                self._notifier.send(watchdog="1")
                continue
            if kind == _STOP:
                return
            if kind == _LOST:
                self._log(f"lost Docker ({payload}); entries kept, reconnecting")
                return
            if kind == _EVENT:
                kind = self._coalesce()
                if kind in (_STOP, _LOST):
                    self._queue.put((kind, payload, -1))  # handle it after this sync
            if not self._sync("hup" if kind == _HUP else "events"):
                return
            if interval is not None:
                self._notifier.send(watchdog="1")

    def _coalesce(self) -> str:
        """Swallow the rest of a burst; return the kind of anything that ended it early."""
        deadline = time.monotonic() + self._timing.max_delay
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, _ = self._get(min(self._timing.debounce, left))
            except queue.Empty:
                break
            if kind != _EVENT:
                return kind
        return _EVENT

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once for stop (and give up the wait on SIGHUP)."""
        try:
            kind, payload = self._get(seconds)
        except queue.Empty:
            return
        if kind == _STOP:
            self._queue.put((kind, payload, -1))


def serve(
    config_path: Any, timing: Timing, log: Callable[[str], None], report: Callable[[Any, Any], None]
) -> None:
    """Wire the real adapters to a Watcher and run it until SIGTERM/SIGINT."""
    from pathlib import Path

    from v6gen import config as config_mod
    from v6gen import engine, lock
    from v6gen.adapters.docker import DockerAPI
    from v6gen.adapters.kernel import IpKernel
    from v6gen.adapters.networkd import DBusNetworkd
    from v6gen.errors import ConfigError
    from v6gen.paths import Paths

    paths = Paths(Path("/"))
    source = config_path or paths.config
    current = config_mod.load(source, explicit=config_path is not None)
    docker = DockerAPI(current.docker_host, current.docker_timeout)
    kernel = IpKernel()

    def resync(reason: str) -> None:
        nonlocal current
        if reason == "hup":
            try:
                current = config_mod.load(source, explicit=config_path is not None)
            except ConfigError as exc:
                log(f"config not reloaded, keeping the previous one: {exc.message}")
        # A fresh bus connection per sync: networkd or dbus may have restarted meanwhile.
        with DBusNetworkd(paths) as networkd:
            ctx = engine.Context(current, paths, engine.Adapters(docker, networkd, kernel), True)
            with lock.held(paths.lock_file):
                outcome = engine.sync(ctx)
        report(outcome, ctx)

    watcher = Watcher(docker.events, resync, log, Notifier(), timing)
    watcher.install_signal_handlers()
    log("watching Docker events")
    watcher.run()
    log("stopped")
