"""`v6gen watch` end to end (issue 5): real dockerd events, networkd, kernel and a LAN neighbour.

Each test starts `v6gen watch` in a fresh lab (watchproc.WatchProc) and never runs `v6gen sync`
for it; only test 4 runs one on purpose, concurrently. Times are measured inside the lab's
namespace (watchproc.EntryWaiter) and printed; the assertions are generous bounds, the
benchmark measures precisely.
"""

from __future__ import annotations

import itertools
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .labhost import REPO, Lab, poll
from .watchproc import (
    EntryWaiter,
    LockHolder,
    NotifySocket,
    UnitSandbox,
    WatchProc,
    create_container,
    create_network,
    global_v6,
    has_open,
    quantile,
    remove,
    start,
    start_dockerd,
    stop_dockerd,
)

pytestmark = pytest.mark.lab

SEED = Path(__file__).resolve().parent / "compose" / "seed.yml"
PROBE = "2001:db8::a:71a5"
DROPIN = "/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf"
NET, SUBNET = "wnet", "2001:db8::e:0/120"
RELOADED = r"reloaded systemd-networkd"
# How watch says Docker went away: the event stream's end, or, when a sync was under way (one
# for a late event of the burst before, however slow the machine makes it), that sync's failure.
LOST = r"lost Docker|sync failed, docker unreachable"
Report = Callable[[str, object], None]


def addr(i: int) -> str:
    return f"2001:db8::e:{0x10 + i:x}"


def dropin_addrs(lab: Lab) -> set[str]:
    p = lab.path(DROPIN)
    text = p.read_text() if p.exists() else ""
    return set(re.findall(r"^(?:IPv6ProxyNDPAddress|ProxyNeighbor)=(\S+)$", text, re.MULTILINE))


def started_at(lab: Lab, cid: str) -> float:
    """The container's State.StartedAt (RFC 3339, nanoseconds, UTC) as a Unix time."""
    stamp = lab.docker.get_json(f"/containers/{cid}/json")["State"]["StartedAt"]
    whole, _, frac = str(stamp).rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp() + float(f"0.{frac or 0}")


def stop(lab: Lab, cid: str) -> None:
    lab.docker.call("POST", f"/containers/{cid}/stop?t=0")


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    with NotifySocket() as sock:
        yield sock


@pytest.fixture
def watch(lab: Lab, notify: NotifySocket) -> Iterator[WatchProc]:
    """`v6gen watch` following the lab's dockerd, past its first sync."""
    with WatchProc(lab, notify=notify) as proc:
        proc.wait_ready()
        yield proc


@pytest.fixture
def report(record_property: Callable[[str, object], None]) -> Report:
    """Measurements: printed (pytest -s or -rP shows them) and in the JUnit XML."""

    def say(name: str, value: object) -> None:
        print(f"watch lab: {name} = {value}")
        record_property(name, value)

    return say


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def test_1_start_is_proxied_and_stop_unproxied(lab: Lab, watch: WatchProc, report: Report) -> None:
    # The seed article's compose file: the LAN reaches it with no `v6gen sync` at all.
    lab.compose_up(SEED)
    took = lab.lan_reachable(PROBE, within=5)
    assert took is not None, f"LAN never reached {PROBE}\n{watch.text()}"
    report("seed_compose_up_to_lan_reachable_s", round(took, 3))
    assert watch.count(rf"add\s+{re.escape(PROBE)}\b") == 1
    running = lab.docker.get_json("/containers/json")
    (probe,) = [c["Id"] for c in running if c["Labels"]["com.docker.compose.service"] == "probe"]
    gone = EntryWaiter(lab, PROBE, present=False, timeout=5)
    t0 = time.time()
    stop(lab, probe)
    at = gone.at()
    assert at is not None and at - t0 <= 2.0, f"{PROBE} still proxied 2 s after its stop"
    assert not lab.lan_ping(PROBE)
    lab.compose_down(SEED)

    # Start -> kernel entry, and stop -> entry gone, over 10 containers one after the other.
    create_network(lab, NET, SUBNET)
    from_request, from_started, from_returned, to_gone = [], [], [], []
    for i in range(10):
        a = addr(i)
        cid = create_container(lab, f"lat{i}", NET, a)
        waiter = EntryWaiter(lab, a, timeout=5)
        t0 = time.time()
        start(lab, cid)
        t1 = time.time()
        at = waiter.at()
        assert at is not None, f"{a} not proxied within 5 s of its start\n{watch.text()}"
        from_request.append(at - t0)
        from_returned.append(at - t1)
        from_started.append(at - started_at(lab, cid))
        gone = EntryWaiter(lab, a, present=False, timeout=5)
        t0 = time.time()
        stop(lab, cid)
        at = gone.at()
        assert at is not None, f"{a} still proxied 5 s after its stop\n{watch.text()}"
        to_gone.append(at - t0)
        remove(lab, cid)

    for name, values in (
        ("start_request_to_proxied", from_request),
        ("started_at_to_proxied", from_started),
        ("start_returned_to_proxied", from_returned),
        ("stop_request_to_unproxied", to_gone),
    ):
        p50, p95 = quantile(values, 0.5), quantile(values, 0.95)
        report(f"{name}_ms", f"p50 {ms(p50)} p95 {ms(p95)} max {ms(max(values))} n={len(values)}")
    # Generous bounds (issue 5's targets are 300 ms p50 / 1 s p95 and 2 s for the stop; the
    # benchmark holds the code to those on a quiet machine).
    assert quantile(from_started, 0.5) < 1.0 and max(from_started) < 3.0, from_started
    assert max(to_gone) <= 2.0, to_gone
    assert watch.alive()


BURST = 40
BURST_COMPOSE = f"""\
version: "2.4"
services:
  burst:
    image: v6gen-busybox:lab
    command: ["sleep", "infinity"]
    scale: {BURST}
    networks: [burst-net]
networks:
  burst-net:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 2001:db8::e:0/120
"""


def test_2_burst_is_one_networkd_reload(
    lab: Lab, watch: WatchProc, report: Report, tmp_path: Path
) -> None:
    compose = tmp_path / "burst.yml"
    compose.write_text(BURST_COMPOSE)
    mark = watch.mark()
    t0 = time.time()
    lab.compose_up(compose, project="burst")
    up = time.time() - t0
    running = lab.docker.get_json("/containers/json")
    addrs = {a for c in running for a in global_v6(lab, c["Id"])}
    assert len(running) == len(addrs) == BURST
    assert poll(lambda: addrs <= lab.proxy_entries(), 10), f"not all proxied\n{watch.text()}"
    proxied = time.time() - t0
    # The owed reload comes `settle` (1 s) after the last event sync; then nothing more.
    assert watch.wait_for(RELOADED, 15, since=mark), f"networkd never reloaded\n{watch.text()}"
    assert poll(lambda: dropin_addrs(lab) == addrs, 5)
    time.sleep(1.5)
    reloads = [round(t - t0, 2) for t, _ in watch.matching(RELOADED, since=mark)]
    adds = [t - t0 for t, _ in watch.matching(r"^v6gen: add ", since=mark)]
    report("burst_containers", BURST)
    report("burst_compose_up_s", round(up, 2))
    report("burst_all_proxied_s", round(proxied, 2))
    report("burst_first_last_add_s", (round(min(adds), 2), round(max(adds), 2)))
    report("burst_reloads_at_s", reloads)
    assert 1 <= len(reloads) <= 2, f"{len(reloads)} networkd reloads for one burst\n{watch.text()}"
    assert not watch.count(r"not reloaded", since=mark)
    assert lab.proxy_entries() == addrs
    # Not left to the lab's teardown, which removes containers one by one.
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: remove(lab, c["Id"]), running))
    assert poll(lambda: not lab.proxy_entries(), 10), watch.text()


@pytest.fixture
def watchdog_watch(lab: Lab, notify: NotifySocket) -> Iterator[WatchProc]:
    """`v6gen watch` as under WatchdogSec=1s: it must ping every 0.5 s, whatever Docker does."""
    with WatchProc(lab, env={"WATCHDOG_USEC": "1000000"}, notify=notify) as proc:
        proc.wait_ready()
        yield proc


def test_3_dockerd_restart(
    lab: Lab, watchdog_watch: WatchProc, notify: NotifySocket, report: Report
) -> None:
    watch = watchdog_watch
    create_network(lab, NET, SUBNET)
    keep, gone, new = addr(0), addr(1), addr(2)
    # `keep` comes back with dockerd (restart policy), `gone` does not: dockerd without
    # live-restore kills what it finds running from its previous life.
    start(lab, create_container(lab, "keep", NET, keep, restart="always"))
    start(lab, create_container(lab, "gone", NET, gone))
    assert poll(lambda: {keep, gone} <= lab.proxy_entries(), 5)
    assert poll(lambda: dropin_addrs(lab) == {keep, gone}, 5)
    files = ("/var/lib/v6gen/uplinks/uplink0.proxy", DROPIN)

    def snapshot() -> tuple[set[str], dict[str, tuple[int, bytes]]]:
        stats = {f: (lab.path(f).stat().st_mtime_ns, lab.path(f).read_bytes()) for f in files}
        return lab.proxy_entries(), stats

    before = snapshot()

    # 1. dockerd crashes: no events, no API. Entries and files stay exactly as they are.
    mark = watch.mark()
    argv = stop_dockerd(lab, signal.SIGKILL)
    assert watch.wait_for(LOST, 30, since=mark), watch.text()
    # Three failed reconnects (0.5 s, 1 s, 2 s apart): well into the backoff. (A bound on the
    # wait only: at most 5 s apart, more tries can't make this fail.)
    assert watch.wait_for(r"docker unreachable", 30, since=mark, n=3), watch.text()
    assert watch.alive()
    assert snapshot() == before, "entries or files changed while Docker was away"
    # Alive as far as a service manager can tell: the watchdog keeps being fed meanwhile.
    lost_at = watch.matching(LOST, since=mark)[0][0]
    pings = [t for t in notify.times("WATCHDOG", "1") if t >= lost_at]
    gaps = [b - a for a, b in itertools.pairwise([lost_at, *pings, time.time()])]
    report("watchdog_max_gap_while_docker_down_ms", ms(max(gaps)))
    assert max(gaps) < 0.9, f"no WATCHDOG=1 for {max(gaps):.1f} s while Docker was away"

    # 2. dockerd is back: `gone` was removed meanwhile (dockerd killed it before it served any
    # events: only the resync can tell), and `new` starts at once (the resync or its events).
    t0 = time.time()
    start_dockerd(lab, argv)
    start(lab, create_container(lab, "new", NET, new))
    assert poll(lambda: lab.proxy_entries() == {keep, new}, 10), (lab.proxy_entries(), watch.text())
    report("dockerd_back_to_resynced_s", round(time.time() - t0, 2))
    assert poll(lambda: dropin_addrs(lab) == {keep, new}, 5)
    assert watch.alive()

    # 3. A clean restart (SIGTERM, as `systemctl restart docker`): dockerd stops its containers
    # (watch may see their die events before the stream closes) and starts `keep` again.
    mark = watch.mark()
    argv = stop_dockerd(lab, signal.SIGTERM)
    assert watch.wait_for(LOST, 30, since=mark), watch.text()
    start_dockerd(lab, argv)
    assert poll(lambda: lab.proxy_entries() == {keep}, 10), (lab.proxy_entries(), watch.text())
    assert watch.alive()


def test_4_signals_lock_and_concurrent_sync(
    lab: Lab, watch: WatchProc, notify: NotifySocket, report: Report
) -> None:
    create_network(lab, NET, SUBNET)
    first = addr(0)
    start(lab, create_container(lab, "first", NET, first))
    assert poll(lambda: first in lab.proxy_entries(), 5)

    # SIGHUP: a full resync, which puts back an entry someone deleted by hand (no event says so).
    lab.run(f"ip -6 neigh del proxy {first} dev uplink0")
    mark = watch.mark()
    watch.signal(signal.SIGHUP)
    assert watch.wait_for(r"SIGHUP", 5, since=mark), watch.text()
    assert poll(lambda: first in lab.proxy_entries(), 5), watch.text()
    assert watch.count(rf"add\s+{re.escape(first)}\b", since=mark) == 1

    # The lock is shared: while something else holds it, watch waits (and then catches up).
    # Held until watch is seen waiting for it, not for a while: no race with the machine's speed.
    holder = LockHolder(lab)
    second = addr(1)
    waiter = EntryWaiter(lab, second, timeout=60)
    start(lab, create_container(lab, "second", NET, second))
    assert poll(lambda: has_open(lab, watch.pid), 60), f"never came to the lock\n{watch.text()}"
    assert second not in lab.proxy_entries(), "watch changed the kernel while the lock was held"
    released = holder.release()
    at = waiter.at()
    assert at is not None, watch.text()
    report("lock_release_to_proxied_ms", ms(at - released))

    # `v6gen sync` runs while watch follows a burst: both serialize on the lock; the end state
    # is the plan, whoever wrote it.
    more = [addr(i) for i in range(2, 6)]
    ids = [create_container(lab, f"c{i}", NET, a) for i, a in enumerate(more)]
    results: list[int] = []
    syncs = [
        threading.Thread(target=lambda: results.append(lab.v6gen("sync").returncode))
        for _ in range(3)
    ]
    starts = [threading.Thread(target=start, args=(lab, cid)) for cid in ids]
    for t in [*starts, *syncs]:
        t.start()
    for t in [*starts, *syncs]:
        t.join(timeout=60)
    assert results == [0, 0, 0]
    want = {first, second, *more}
    assert poll(lambda: lab.proxy_entries() == want, 5), (lab.proxy_entries(), watch.text())
    assert poll(lambda: dropin_addrs(lab) == want, 5)
    assert lab.v6gen("diff").returncode == 0
    assert not watch.count(r"sync failed")

    # SIGTERM: a clean exit, at once, saying so to the service manager.
    t0 = time.monotonic()
    watch.signal(signal.SIGTERM)
    code = watch.proc.wait(timeout=5)
    took = time.monotonic() - t0
    report("sigterm_to_exit_ms", ms(took))
    assert code == 0 and took < 2.0, (code, took, watch.text())
    assert notify.wait("STOPPING", "1", 2)
    assert not notify.times("WATCHDOG"), "WATCHDOG=1 sent without WATCHDOG_USEC"


def test_4b_sighup_follows_a_corrected_docker_host(lab: Lab, notify: NotifySocket) -> None:
    """The admin started watch with a wrong docker_host and fixes it: SIGHUP must make watch
    ask the right Docker, at once, not keep retrying the old socket."""
    create_network(lab, NET, SUBNET)
    a = addr(0)
    start(lab, create_container(lab, "waiting", NET, a))
    lab.write("/etc/v6gen/config.yaml", "docker_host: unix:///run/no-docker-here.sock\n")
    with WatchProc(lab, notify=notify) as proc:
        proc.wait_ready()  # READY=1 while Docker is away, too
        assert proc.wait_for(r"docker unreachable", 5), proc.text()
        assert a not in lab.proxy_entries()
        lab.write("/etc/v6gen/config.yaml", "docker_host: unix:///run/docker.sock\n")
        mark = proc.mark()
        proc.signal(signal.SIGHUP)
        assert proc.wait_for(r"following Docker at unix:///run/docker.sock", 5, since=mark)
        assert poll(lambda: a in lab.proxy_entries(), 5), proc.text()
        # And it follows that Docker's events from then on.
        b = addr(1)
        start(lab, create_container(lab, "later", NET, b))
        assert poll(lambda: b in lab.proxy_entries(), 5), proc.text()
        assert not proc.count(r"SIGHUP: full resync")  # it resubscribed instead
        # Same Docker: no resubscribing, a plain resync.
        mark = proc.mark()
        proc.signal(signal.SIGHUP)
        assert proc.wait_for(r"SIGHUP: full resync", 5, since=mark), proc.text()
        assert proc.count(r"following Docker at") == 1
        assert proc.stop() == 0


def test_5_sd_notify_ready_and_watchdog(lab: Lab, notify: NotifySocket, report: Report) -> None:
    # A container for the first sync to proxy, and that sync held back by the lock: READY=1
    # must wait for it.
    create_network(lab, NET, SUBNET)
    a = addr(0)
    start(lab, create_container(lab, "before", NET, a))
    holder = LockHolder(lab)
    t0 = time.time()
    env = {"WATCHDOG_USEC": "400000"}  # pings every 0.2 s
    with WatchProc(lab, env=env, notify=notify) as proc:
        # Its first sync is seen waiting for the lock; by then nothing may have said READY=1
        # (flush: all that watch sent has been received).
        assert poll(lambda: has_open(lab, proc.pid), 60), f"never came to the lock\n{proc.text()}"
        notify.flush()
        assert not notify.times("READY"), "READY=1 while the first sync waits"
        assert a not in lab.proxy_entries()
        released = holder.release()
        proc.wait_ready()
        (ready,) = notify.times("READY", "1")
        assert a in lab.proxy_entries(), "READY=1 before the first sync was done"
        report("lock_release_to_ready_ms", ms(ready - released))
        report("watch_start_to_ready_ms_incl_lock", ms(ready - t0))
        statuses = [f["STATUS"] for _, f in notify.messages if "STATUS" in f]
        assert "following Docker events" in statuses
        assert notify.wait("WATCHDOG", "1", timeout=30, n=6), notify.messages
        pings = notify.times("WATCHDOG", "1")
        gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
        report("watchdog_ping_gaps_ms", [ms(g) for g in gaps])
        # Half the deadline; no gap anywhere near the full 0.4 s.
        assert max(gaps) < 0.35, gaps
        assert all(t >= ready for t in pings), "WATCHDOG=1 before READY=1"
        assert proc.stop() == 0
    assert notify.wait("STOPPING", "1", 2)


def test_5b_killed_with_a_reload_owed(lab: Lab) -> None:
    # Killed inside the settle time after a sync: the drop-in is written, networkd not reloaded
    # yet. The next watch must reload at once, although its own sync finds nothing to write.
    # The kill has to come within `settle` (1 s) of the sync, which a test held up longer (a
    # loaded machine) misses: the dead watch's whole output says whether it did, and if it
    # reloaded first, the setup is tried again with another container.
    create_network(lab, NET, SUBNET)
    proxied: set[str] = set()
    for attempt in range(5):
        a = addr(attempt)
        with NotifySocket() as notify, WatchProc(lab, notify=notify) as first:
            first.wait_ready()
            mark = first.mark()
            start(lab, create_container(lab, f"late{attempt}", NET, a))
            assert first.wait_for(rf"add\s+{re.escape(a)}\b", 30), first.text()
            first.signal(signal.SIGKILL)
            assert first.proc.wait(timeout=60) == -signal.SIGKILL
        proxied.add(a)
        if not first.count(RELOADED, since=mark):  # all of it read: the reader has ended
            break
    else:
        pytest.fail(f"every kill came after the owed reload\n{first.text()}")
    print(f"watch lab: killed within the settle time on attempt {attempt + 1}")
    assert dropin_addrs(lab) == proxied
    with NotifySocket() as notify, WatchProc(lab, notify=notify) as second:
        second.wait_ready()
        # Its output comes through a pipe, READY=1 through the notify socket: wait for the line.
        assert second.wait_for(RELOADED, 60), second.text()
        assert second.count(RELOADED) == 1, second.text()
        assert not second.count(r"add\s"), "the second watch had files to write"


UNIT = REPO / "debian" / "v6gen.service"


def _watch_in_unit_sandbox(lab: Lab, notify: NotifySocket) -> tuple[WatchProc, str, str]:
    """A container proxied by the first sync and one started later, with watch running in
    (an approximation of) debian/v6gen.service's sandbox: see watchproc.UnitSandbox."""
    create_network(lab, NET, SUBNET)
    before, after = addr(0), addr(1)
    start(lab, create_container(lab, "before", NET, before))
    proc = WatchProc(lab, notify=notify, wrap=UnitSandbox(UNIT).argv())
    proc.wait_ready()
    start(lab, create_container(lab, "after", NET, after))
    return proc, before, after


def test_6_unit_sandbox(lab: Lab, notify: NotifySocket) -> None:
    # Read-only /etc, /usr, /run and /var but for the unit's writable paths, and only the
    # capabilities it keeps: files, hooks, sysctls, proxy entries, the networkd reload and
    # READY=1 over a socket on a read-only mount all still work.
    proc, before, after = _watch_in_unit_sandbox(lab, notify)
    with proc:
        assert poll(lambda: {before, after} <= lab.proxy_entries(), 5), proc.text()
        assert proc.wait_for(RELOADED, 5), proc.text()
        assert poll(lambda: dropin_addrs(lab) == {before, after}, 5)
        assert not proc.count(r"sync failed|Read-only|Permission denied|not permitted")
        assert proc.stop() == 0


def test_6b_unit_sandbox_on_a_host_without_networkd_conf_d(lab: Lab, notify: NotifySocket) -> None:
    # 256: the drop-in's per-link IPv6Forwarding=. The unit names networkd.conf.d in
    # ReadWritePaths= (only to remove an earlier v6gen's file), optionally: a stock Debian has
    # no such directory, and the lab mounts a tmpfs there.
    lab.write("/etc/v6gen/config.yaml", "systemd_version: 256\n")
    lab.run("umount /etc/systemd/networkd.conf.d && rmdir /etc/systemd/networkd.conf.d")
    proc, before, after = _watch_in_unit_sandbox(lab, notify)
    with proc:
        assert not proc.count(r"sync failed"), proc.text()  # the first sync is done: READY=1
        assert poll(lambda: {before, after} <= lab.proxy_entries(), 5), proc.text()
