"""Many v6gen processes at once: they serialize on the lock, and a lock whose holder was killed
never blocks anyone. Live runs in a fault host (faultns.py).

Serialization is observed, not assumed: every sync asks Docker for its containers inside the
lock, and the replay server answers that request only after a short think time while counting
how many such requests are in flight. Under the lock that is never more than one; the control
run (`--dry-run`, which takes no lock) shows the counter does see overlap when there is some.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from .faultns import FaultHost
from .replay import DockerReplay, body, container
from .tree import Snapshot

SYNCS = 12
# Four Docker states, served in turn to whoever asks next.
SETS = [
    body([container(f"s{k}c{i}", f"2001:db8::{k + 1:x}:{i:x}") for i in range(10 + 5 * k)])
    for k in range(4)
]


def _files(host: FaultHost) -> Snapshot:
    return {k: v for k, v in host.snapshot().items() if v[0] != "d"}


def _wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_concurrent_syncs_and_a_watch_serialize(fhost: FaultHost, replay: DockerReplay) -> None:
    expected: dict[bytes, tuple[Snapshot, frozenset[tuple[str, str]]]] = {}
    for answer in SETS:
        replay.containers = answer
        assert fhost.v6gen("sync").code in (0, 5)
        expected[answer] = (_files(fhost), fhost.proxy_entries())
    replay.served.clear()
    replay.max_in_flight = 0

    # Control: without the lock (a dry run takes none) the counter does see overlap.
    replay.containers = SETS[0]
    pids = [fhost.fork("sync", "--dry-run") for _ in range(SYNCS)]
    assert all(fhost.wait(p).code == 0 for p in pids)
    assert replay.max_in_flight > 1, "the overlap detector detects nothing"
    replay.max_in_flight = 0
    replay.served.clear()

    replay.schedule = SETS
    watch = fhost.fork("watch", "--debounce", "0.02")
    _wait_for(lambda: replay.served and replay.counts.get("/events"), 10, "the watch's first sync")
    pids = [fhost.fork("sync") for _ in range(SYNCS)]
    deadline = time.monotonic() + 30
    runs: dict[int, int] = {}
    while len(runs) < SYNCS:  # keep the watch busy while the syncs run
        assert time.monotonic() < deadline, "syncs did not finish"
        replay.emit({"Type": "container", "Action": "start", "Actor": {"ID": "x"}})
        for pid in pids:
            if pid not in runs:
                reply = fhost.call("wait", pid=pid, timeout=0.03)
                if not reply.get("running"):
                    runs[pid] = int(reply["code"])
    os.kill(watch, signal.SIGTERM)  # our fork, not yet reaped
    watched = fhost.wait(watch, timeout=20)
    assert fhost.reap() == []

    assert sorted(set(runs.values())) in ([0], [5], [0, 5]), runs
    assert watched.code == 0, watched
    assert "error" not in watched.err, watched.err
    assert replay.max_in_flight == 1, "two syncs asked Docker at the same time"
    assert len(replay.served) >= SYNCS + 2  # every sync asked, the watch at least twice
    # Whoever asked last decided: the end state is exactly that Docker state's.
    last = max(replay.served, key=lambda s: s.start).body
    files, entries = expected[last]
    assert _files(fhost) == files
    assert fhost.proxy_entries() == entries
    replay.schedule = []
    replay.containers = last
    again = fhost.v6gen("sync")
    # Nothing left to change but the reload this host's absent networkd never got: still owed.
    assert again.code == 5 and again.out == "", again
    assert "networkd was not reloaded" in again.err, again


def test_lock_of_a_killed_sync_never_blocks(fhost: FaultHost, replay: DockerReplay) -> None:
    replay.containers = SETS[1]
    replay.mode, replay.hang_seconds = "hang", 30
    holder = fhost.fork("sync")  # takes the lock, then waits for Docker forever
    _wait_for(lambda: replay.counts.get("/containers/json") == 1, 10, "the first sync to ask")
    waiter = fhost.fork("sync")
    time.sleep(0.5)
    assert fhost.call("wait", pid=waiter, timeout=0).get("running"), "did not wait for the lock"
    assert replay.counts["/containers/json"] == 1, "the second sync got past the lock"

    replay.mode = "ok"
    t0 = time.monotonic()
    fhost.kill(holder, group=True)
    assert fhost.wait(holder).code == -signal.SIGKILL
    run = fhost.wait(waiter, timeout=10)
    took = time.monotonic() - t0
    assert run.code == 5 and "error" not in run.err, run
    assert took < 2, f"the lock of a killed sync blocked the next one for {took:.1f} s"
    assert fhost.path("/run/v6gen/lock").exists()  # the file stays; only a held flock counts
    t0 = time.monotonic()
    again = fhost.v6gen("sync")
    # Nothing left but the reload this networkd-less host can never do, still owed.
    assert (again.code, again.out) == (5, ""), again
    assert time.monotonic() - t0 < 2
