"""Many v6gen processes at once: they serialize on the lock, and a lock whose holder was killed
never blocks anyone. Live runs in a fault host (faultns.py).

Serialization is observed, not assumed: every sync asks Docker for its containers inside the
lock, and the replay server answers that request only after a short think time while counting
how many such requests are in flight. Under the lock that is never more than one; the control
run (`--dry-run`, which takes no lock) shows the counter does see overlap when there is some:
there the replay holds each request until a second one comes, so the overlap shows whatever the
machine's speed. Waits are on events (requests the replay saw, process state, /proc/locks);
their deadlines only keep a broken test from hanging.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

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


def _wait_for(cond: Callable[[], object], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _flocks(path: Path) -> list[tuple[bool, int]]:
    """The flocks on `path` from /proc/locks: (waiting, pid) for each."""
    st = path.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    found = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        waiting = fields[1] == "->"
        fields = fields[1 + waiting :]
        if fields[0] == "FLOCK" and fields[4] == inode:
            found.append((waiting, int(fields[3])))
    return found


def _retrying(pid: int, lock: str) -> bool:
    """True while `pid` has the lock file open and sleeps: v6gen's lock retries a non-blocking
    flock every 0.05 s, so that is a run waiting for the lock."""
    proc = Path(f"/proc/{pid}")
    try:
        opened = any(str(fd.readlink()) == lock for fd in (proc / "fd").iterdir())
        return opened and "nanosleep" in (proc / "wchan").read_text()
    except FileNotFoundError:  # an fd closed meanwhile, or the process ended
        return False


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
    replay.together = 2
    pids = [fhost.fork("sync", "--dry-run") for _ in range(SYNCS)]
    assert all(fhost.wait(p).code == 0 for p in pids)
    replay.together = 0
    assert replay.max_in_flight > 1, "the overlap detector detects nothing"
    replay.max_in_flight = 0
    replay.served.clear()

    replay.schedule = SETS
    watch = fhost.fork("watch", "--debounce", "0.02")
    _wait_for(lambda: replay.served and replay.counts.get("/events"), "the watch's first sync")
    pids = [fhost.fork("sync") for _ in range(SYNCS)]
    deadline = time.monotonic() + 300  # a hang guard
    runs: dict[int, int] = {}
    while len(runs) < SYNCS:  # keep the watch busy while the syncs run
        assert time.monotonic() < deadline, "syncs did not finish"
        replay.emit({"Type": "container", "Action": "start", "Actor": {"ID": "x"}})
        for pid in pids:
            if pid not in runs:
                reply = fhost.call("wait", pid=pid, timeout=0.03)
                if not reply.get("running"):
                    runs[pid] = int(reply["code"])
    # The events reach the watch whenever they do; its sync for them comes, then it may stop.
    _wait_for(lambda: len(replay.served) >= SYNCS + 2, "the watch's sync for the events")
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
    replay.mode = "hang"
    holder = fhost.fork("sync")  # takes the lock, then waits for a Docker that never answers
    _wait_for(lambda: replay.counts.get("/containers/json") == 1, "the first sync to ask")
    lock = fhost.path("/run/v6gen/lock")
    assert _flocks(lock) == [(False, holder)]  # an flock, which the kernel drops with its holder
    waiter = fhost.fork("sync")
    _wait_for(lambda: _retrying(waiter, "/run/v6gen/lock"), "the second sync to wait for the lock")
    assert fhost.call("wait", pid=waiter, timeout=0).get("running"), "did not wait for the lock"
    assert replay.counts["/containers/json"] == 1, "the second sync got past the lock"

    replay.mode = "ok"
    fhost.kill(holder, group=True)
    assert fhost.wait(holder).code == -signal.SIGKILL
    # Nothing but the waiter, retrying every 0.05 s, can hold the lock now, so it goes on at once;
    # how long its sync then takes is up to the machine, and no clock judges it.
    assert _flocks(lock) in ([], [(False, waiter)])
    run = fhost.wait(waiter)
    assert run.code == 5 and "error" not in run.err, run
    assert lock.exists()  # the file stays; only a held flock counts
    assert _flocks(lock) == []
    again = fhost.v6gen("sync")
    # Nothing left but the reload this networkd-less host can never do, still owed.
    assert (again.code, again.out) == (5, ""), again
