"""Issue 14: with `v6gen watch` running, a container is reachable from the LAN the instant it
starts. Real dockerd, networkd, kernel and LAN neighbour (tests/lab); the LAN neighbour's
Neighbour Discovery timers are the kernel's defaults here (RetransTimer 1 s, 3 solicitations),
as on a real LAN, so a first solicitation that finds no proxy entry costs a whole second.

Only test 1 has a timed assertion: the 50 ms is the issue's acceptance bound, measured from
`docker run -d` returning to the LAN's first reply (lanping.Pinger: no process start in
between). It holds with a wide margin on dockerd 20.10, which connects a container's network
~0.6 s before `docker run -d` returns (tests/fixtures/docker/starting), while the fast path
takes a few tens of ms even on a busy machine.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import MakeLab
from .image import IMAGE
from .labhost import Lab, poll
from .lanping import Pinger
from .watchproc import (
    EntryWaiter,
    LockHolder,
    NotifySocket,
    WatchProc,
    create_container,
    create_network,
    global_v6,
    has_open,
    remove,
    start,
    start_dockerd,
    stop_dockerd,
)

pytestmark = pytest.mark.lab

NET, SUBNET = "inet", "2001:db8::e:0/120"
RESTORE = "/var/lib/v6gen/uplinks/uplink0.proxy"
STATE = "/var/lib/v6gen/state.json"
FIRST_REPLY_BOUND = 0.050  # issue 14's acceptance: the first reply within 50 ms
Report = Callable[[str, object], None]


def addr(i: int) -> str:
    return f"2001:db8::e:{0x10 + i:x}"


def kernel_defaults(lab: Lab) -> None:
    lab.lan().run(
        "sysctl -qw net.ipv6.neigh.eth0.retrans_time_ms=1000 net.ipv6.neigh.eth0.mcast_solicit=3"
    )


def docker_run(lab: Lab, network: str, address: str | None, *cmd: str) -> str:
    """`docker run -d` as a user types it; returns once the CLI has returned."""
    ip = ["--ip6", address] if address else []
    argv = ["env", "-u", "DOCKER_HOST", "docker", "run", "-d", "--network", network, *ip]
    return lab.run([*argv, IMAGE, *(cmd or ("sleep", "infinity"))]).stdout.strip()


def restore_lines(lab: Lab) -> set[str]:
    p = lab.path(RESTORE)
    text = p.read_text() if p.exists() else ""
    return set(re.findall(r"^neigh replace proxy (\S+) dev uplink0$", text, re.MULTILINE))


def owned(lab: Lab) -> set[str]:
    p = lab.path(STATE)
    doc = json.loads(p.read_text()) if p.exists() else {}
    return set(doc.get("owned_proxy_entries", {}).get("uplink0", []))


def fast_adds(watch: WatchProc, address: str) -> int:
    return watch.count(rf"add\s+{re.escape(address)}\b.*\(fast path\)")


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def running_v6(lab: Lab) -> set[str]:
    return {a for c in lab.docker.get_json("/containers/json") for a in global_v6(lab, c["Id"])}


@pytest.fixture
def report(record_property: Callable[[str, object], None]) -> Report:
    def say(name: str, value: object) -> None:
        print(f"instant lab: {name} = {value}")
        record_property(name, value)

    return say


@pytest.fixture
def watch(lab: Lab) -> Iterator[WatchProc]:
    with NotifySocket() as notify, WatchProc(lab, notify=notify) as proc:
        proc.wait_ready()
        yield proc


def test_1_first_reply_within_50_ms_of_docker_run(
    lab: Lab, watch: WatchProc, report: Report
) -> None:
    create_network(lab, NET, SUBNET)
    kernel_defaults(lab)
    replies: list[float | None] = []
    with Pinger(lab.lan().pid) as pinger:
        for i in range(10):
            # Two of ten without --ip6: dockerd picks the address, known to the test only
            # from an inspect after `docker run -d` returned (which then counts against it).
            dynamic = i % 5 == 4
            cid = docker_run(lab, NET, None if dynamic else addr(i))
            returned = time.perf_counter()
            target = global_v6(lab, cid)[0] if dynamic else addr(i)
            waited = time.perf_counter() - returned
            took = pinger.first_reply(target, timeout=3.0)
            replies.append(None if took is None else waited + took)
            assert fast_adds(watch, target) == 1, watch.text()
    report("docker_run_to_first_reply_ms", [ms(r) for r in replies])
    assert all(r is not None and r <= FIRST_REPLY_BOUND for r in replies), replies
    # The full syncs that followed agree with the fast path: nothing left to do.
    want = running_v6(lab)
    assert poll(lambda: lab.v6gen("diff").returncode == 0, 10), lab.v6gen("diff").stdout
    assert lab.proxy_entries() == restore_lines(lab) == owned(lab) == want
    assert not watch.count("fast path failed")


def test_2_burst_of_50(lab: Lab, watch: WatchProc, report: Report) -> None:
    create_network(lab, NET, SUBNET)
    addrs = [addr(i) for i in range(50)]
    ids = [create_container(lab, f"b{i:02d}", NET, a) for i, a in enumerate(addrs)]
    mark = watch.mark()
    t0 = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda c: start(lab, c), ids))
    started = time.monotonic() - t0
    assert poll(lambda: set(addrs) <= lab.proxy_entries(), 30), watch.text()
    report("burst50_start_s", round(started, 2))
    report("burst50_all_proxied_s", round(time.monotonic() - t0, 2))
    report("burst50_fast_path_adds", sum(fast_adds(watch, a) for a in addrs))
    assert poll(lambda: lab.v6gen("diff").returncode == 0, 20), lab.v6gen("diff").stdout
    assert lab.proxy_entries() == restore_lines(lab) == owned(lab) == set(addrs)
    assert not watch.count("fast path failed|sync failed", since=mark)
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda c: remove(lab, c), ids))
    assert poll(lambda: not lab.proxy_entries(), 20), watch.text()
    assert poll(lambda: lab.v6gen("diff").returncode == 0, 20)
    assert not restore_lines(lab) and not owned(lab)
    assert watch.alive()


def test_3_a_container_that_dies_before_its_event_is_handled(lab: Lab, watch: WatchProc) -> None:
    """Another run holds the lock while the container is connected, started and dies: the
    fast path, waiting for the lock, takes what arrived meanwhile into account and proxies
    nothing, not even for a moment."""
    create_network(lab, NET, SUBNET)
    doomed = addr(0)
    holder = LockHolder(lab)
    try:
        never = EntryWaiter(lab, doomed, timeout=8)
        cid = docker_run(lab, NET, doomed, "false")
        assert poll(lambda: has_open(lab, watch.pid), 10), "watch is not waiting for the lock"
        status = f"/containers/{cid}/json"
        assert poll(lambda: lab.docker.get_json(status)["State"]["Status"] == "exited", 10)
        # dockerd sends `die` to every subscriber as the status changes; a moment for it to
        # reach watch's stream (what happens if it came later is test 2's and 4's business:
        # the entry would come and go, and the end state below is the same).
        time.sleep(0.5)
    finally:
        holder.release()
    assert never.at() is None, f"{doomed} was proxied for a dead container\n{watch.text()}"
    assert not watch.count(rf"add\s+{re.escape(doomed)}\b")
    assert poll(lambda: lab.v6gen("diff").returncode == 0, 10)
    assert doomed not in owned(lab) | restore_lines(lab)
    assert watch.alive() and not watch.count("fast path failed")


def test_4_dockerd_restarts_mid_burst(lab: Lab, watch: WatchProc, report: Report) -> None:
    create_network(lab, NET, SUBNET)
    addrs = [addr(i) for i in range(24)]
    # Half come back with dockerd (restart policy), half don't: dockerd without live-restore
    # kills what it finds running from its previous life.
    ids = [
        create_container(lab, f"r{i:02d}", NET, a, restart="always" if i % 2 else "no")
        for i, a in enumerate(addrs)
    ]
    failed: list[str] = []

    def go(cid: str) -> None:
        try:
            start(lab, cid)
        except Exception as exc:  # dockerd is away for some: that is the point
            failed.append(str(exc)[:80])

    with ThreadPoolExecutor(4) as pool:
        first = [pool.submit(go, c) for c in ids[:12]]
        assert poll(lambda: len(lab.proxy_entries()) >= 3, 20), watch.text()
        argv = stop_dockerd(lab, signal.SIGKILL)
        rest = [pool.submit(go, c) for c in ids[12:]]
        for f in [*first, *rest]:
            f.result()
    start_dockerd(lab, argv)
    for cid in ids[12:]:
        go(cid)  # the ones that met no dockerd, now
    report("starts_refused_while_dockerd_was_down", len(failed))

    def settled() -> bool:
        return lab.proxy_entries() == running_v6(lab) and lab.v6gen("diff").returncode == 0

    assert poll(settled, 30, 0.5), (lab.proxy_entries(), running_v6(lab), watch.text())
    assert lab.proxy_entries() == restore_lines(lab) == owned(lab)
    assert watch.alive() and not watch.count("Traceback")


def test_5_docker_28_connects_just_before_run_returns(make_lab: MakeLab, report: Report) -> None:
    """Debian sid's dockerd 28.5: the order is the same (connect, then start), but the
    container runs ~10-40 ms after `connect`, so the fast path races `docker run -d` itself:
    timed, reported, not asserted (the 50 ms acceptance is on the default lab's 20.10). What is
    asserted: the fast path proxies each container at connect (no waiting for the debounce), on
    a network in gateway mode `routed` (Docker 28's default mode is not reachable at all)."""
    lab = make_lab(release="sid")
    lab.docker.call("POST", "/networks/create", {
        "Name": NET, "EnableIPv6": True, "CheckDuplicate": True,
        "Options": {"com.docker.network.bridge.gateway_mode_ipv6": "routed"},
        "IPAM": {"Config": [{"Subnet": SUBNET}]},
    })  # fmt: skip
    kernel_defaults(lab)
    before = addr(99)
    docker_run(lab, NET, before)
    replies: list[float | None] = []
    # No $NOTIFY_SOCKET: the test's /tmp is not the release's. The first sync is done once it
    # has proxied the container that ran before watch.
    with WatchProc(lab) as watch, Pinger(lab.lan().pid) as pinger:
        assert watch.wait_for(rf"add\s+{re.escape(before)}\b", 30), watch.text()
        for i in range(5):
            docker_run(lab, NET, addr(i))
            replies.append(pinger.first_reply(addr(i), timeout=3.0))
        for i in range(5):
            # Added by the fast path, whether before or after the CLI returned.
            assert watch.wait_for(rf"add\s+{re.escape(addr(i))}\b.*\(fast path\)", 5)
        report("docker28_run_to_first_reply_ms", [ms(r) for r in replies])
        assert all(r is not None for r in replies), replies  # reachable, whatever the race
        assert poll(lambda: lab.v6gen("diff").returncode == 0, 10)
        assert lab.proxy_entries() == restore_lines(lab) == owned(lab) == running_v6(lab)
        assert not watch.count("fast path failed")
