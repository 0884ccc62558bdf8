"""Virtual time for the Watcher's unit tests: no test waits for, or races, the wall clock.

The Watcher reads the time through `time.monotonic()` and waits only in `self._queue.get(timeout=)`
(v6gen/watch.py). `VirtualTime.install` points its module's `time` at this clock and a watcher's
queue at `VirtualQueue`, whose timed waits end only when the test lets virtual time pass. Time
passes event by event, and only once every thread is idle: the watcher waiting in its queue (with
nothing in it) and each event stream's reader waiting for an item (or done). So a burst the test
puts in is all read before any debounce can run out, however slow or loaded the machine, and a
step of virtual time always lands exactly on the watcher's next deadline.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from v6gen import watch

Item = tuple[str, Any, int]
START = 1000.0
HANG_GUARD = 60.0  # real seconds a thread may stay busy before the test calls it stuck


class VirtualTime:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.now = START
        self.streams: list[Stream] = []
        self.queue = VirtualQueue(self)
        self.thread: threading.Thread | None = None  # the watcher's, once started

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch) -> VirtualTime:
        clock = cls()
        monkeypatch.setattr(watch, "time", clock)
        return clock

    def monotonic(self) -> float:
        with self.cond:
            return self.now

    def start(self, watcher: watch.Watcher) -> threading.Thread:
        """Run `watcher` on a thread, its queue the virtual one."""
        watcher._queue = self.queue
        self.thread = threading.Thread(target=watcher.run, daemon=True)
        self.thread.start()
        return self.thread

    def stream(self) -> Stream:
        with self.cond:
            self.streams.append(Stream(self))
            return self.streams[-1]

    # -- letting time pass ----------------------------------------------------------------
    def _idle(self) -> bool:
        watcher_done = self.thread is not None and not self.thread.is_alive()
        return (watcher_done or self.queue.idle()) and all(s.idle() for s in self.streams)

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + HANG_GUARD
        while not self._idle():
            assert time.monotonic() < deadline, "a thread stayed busy (or blocked elsewhere)"
            self.cond.wait(0.01)  # thread ends notify nobody: look again now and then

    def settle(self) -> None:
        """Until everything has reacted to what happened so far; no time passes."""
        with self.cond:
            self._wait_idle()

    def run_until(self, done: Callable[[], bool], limit: float = 3600.0) -> None:
        """Let virtual time pass until `done()` holds once all is idle; fail if nothing is left
        to happen first, or more than `limit` virtual seconds would pass."""
        with self.cond:
            end = self.now + limit
            while True:
                self._wait_idle()
                if done():
                    return
                due = self.queue.deadline if self.queue.idle() else None
                assert due is not None, "nothing left to happen, and it did not"
                assert due <= end, f"not within {limit} virtual seconds"
                self.now = max(self.now, due)
                self.cond.notify_all()

    def run_for(self, seconds: float) -> None:
        """Let exactly `seconds` of virtual time pass, every deadline in it met in turn."""
        with self.cond:
            end = self.now + seconds
            while True:
                self._wait_idle()
                due = self.queue.deadline if self.queue.idle() else None
                if due is None or due > end:
                    self.now = end
                    self.cond.notify_all()
                    self._wait_idle()
                    return
                self.now = max(self.now, due)
                self.cond.notify_all()


class VirtualQueue(queue.Queue[Item]):
    """The Watcher's message queue; its timeouts are virtual."""

    def __init__(self, clock: VirtualTime) -> None:
        super().__init__()
        self._clock = clock
        self._items: deque[Item] = deque()
        self._waiting = False
        self.deadline: float | None = None  # of the wait in progress

    def idle(self) -> bool:
        """Waiting with nothing to take and its deadline not yet come."""
        return (
            self._waiting
            and not self._items
            and (self.deadline is None or self.deadline > self._clock.now)
        )

    def put(self, item: Item, block: bool = True, timeout: float | None = None) -> None:
        clock = self._clock
        with clock.cond:
            self._items.append(item)
            for s in clock.streams:
                s.sent_from(threading.current_thread())
            clock.cond.notify_all()

    def get(self, block: bool = True, timeout: float | None = None) -> Item:
        clock = self._clock
        with clock.cond:
            self.deadline = None if timeout is None else clock.now + timeout
            try:
                while not self._items:
                    if self.deadline is not None and clock.now >= self.deadline:
                        raise queue.Empty
                    self._waiting = True
                    clock.cond.notify_all()
                    clock.cond.wait()
                return self._items.popleft()
            finally:
                self._waiting = False
                self.deadline = None


class Stream:
    """A Docker event stream the test feeds: `put` an event dict, or an exception to raise."""

    def __init__(self, clock: VirtualTime) -> None:
        self._clock = clock
        self._items: deque[Any] = deque()
        self.closed = False
        self._reader: threading.Thread | None = None
        self._waiting = False
        self._ending = False  # the reader's iteration has ended; its last put is to come
        self._done = False

    def put(self, item: Any) -> None:
        with self._clock.cond:
            self._items.append(item)
            self._clock.cond.notify_all()

    def close(self) -> None:
        with self._clock.cond:
            self.closed = True
            self._clock.cond.notify_all()

    def idle(self) -> bool:
        return self._done or (self._waiting and not self._items and not self.closed)

    def sent_from(self, thread: threading.Thread) -> None:
        # The Watcher's reader puts exactly one message once the iteration has ended.
        if self._ending and thread is self._reader:
            self._done = True

    def __iter__(self) -> Iterator[dict[str, Any]]:
        cond = self._clock.cond
        with cond:
            self._reader = threading.current_thread()
        while True:
            with cond:
                while not self._items and not self.closed:
                    self._waiting = True
                    cond.notify_all()
                    cond.wait()
                self._waiting = False
                item = None if self.closed else self._items.popleft()
                if item is None or isinstance(item, Exception):
                    self._ending = True
            if item is None:
                return
            if isinstance(item, Exception):
                raise item
            yield item
