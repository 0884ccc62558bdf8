"""instant_*: issue 14, side by side in one lab. `docker run -d` returned -> the first reply to
a LAN ping sent at once, for v6gen watch, ndppd 0.2.5 with an `auto` rule for the Docker
network's prefix, and nothing; `docker rm -f` -> the entry gone; watch's and ndppd's memory
and idle CPU.

Lab: networkd 252, networkd-dispatcher, dockerd 20.10 (tests/lab). The LAN neighbour's NDP
timers are the kernel's defaults (RetransTimer 1 s, 3 solicitations), as on a real LAN: a
first solicitation nobody answers costs a second. The ping is an ICMPv6 echo from a raw socket
the bench opened in the LAN namespace (tests/lab/lanping.py), sent right after the `docker` CLI
returned, no process start in between; the value is the time from that return to its reply.
Every container gets a fresh address (the neighbour has no cache entry for it).

1. v6gen: `v6gen watch` running (as tests/lab runs it). 1 warm-up + TRIALS runs of
   `docker run -d --ip6 ADDR`, then `docker rm -f`, timed from the CLI's return to the entry
   gone from the kernel (rtnetlink dump every 1 ms). Before each step watch has been quiet
   for 0.3 s.
   Memory: VmRSS of the watch process once it is ready, and after EVENTS calls of
   `docker network connect`/`disconnect` of a running container to a second IPv6 network,
   each acted on by the fast path (the events dockerd sent with v6gen's filter are counted on
   a stream of the bench's own).
   Idle CPU: utime+stime of the process over IDLE seconds with no events.
2. ndppd: watch stopped, `v6gen clean`, ndppd 0.2.5 (Debian) with `rule <prefix> { auto }`:
   it forwards each solicitation into the bridge the route names and answers once the
   container does. Same runs; its VmRSS and idle CPU likewise. Its `auto` rule finds the bridge
   only for the first address after it starts, so the same runs again with ndppd started afresh
   before each (ndppd at its best). A run with no reply within 3 s counts as slower than any
   in the percentiles.
3. nothing: no proxy at all; NONE_TRIALS runs, each waiting 3 s for a reply.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from tests.lab.capture_fixtures import EVENT_FILTERS
from tests.lab.image import IMAGE
from tests.lab.lanping import Pinger
from tests.lab.watchproc import NotifySocket, WatchProc

from .common import ProxyTable, Section, ifindex, log, pct, rnd, summary
from .labutil import start_lab, wait_quiet

TRIALS = 20
NONE_TRIALS = 5
EVENTS = 1000
IDLE = 10.0
NET, SUBNET = "inst", "2001:db8::d:0/112"
NET2, SUBNET2 = "inst2", "2001:db8::c:0/120"
REPLY_TIMEOUT = 3.0
TICK = 100  # USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s
NDPPD_CONF = f"""# v6gen bench: ndppd answers for the Docker network's prefix, asking the bridge
route-ttl 30000
proxy uplink0 {{
    router no
    timeout 500
    ttl 30000
    rule {SUBNET} {{
        auto
    }}
}}
"""


def _addr(i: int) -> str:
    return f"2001:db8::d:{0x10 + i:x}"


def _pct(replies: list[float], lost: int, p: float) -> float | None:
    """Percentile over every run, a run with no reply counting as slower than any reply; None
    when the percentile falls on one of those."""
    value = pct([*replies, *[math.inf] * lost], p)
    return None if math.isinf(value) or math.isnan(value) else rnd(value, 2)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def _idle_cpu_ms(pid: int) -> float:
    before = _cpu_ticks(pid)
    time.sleep(IDLE)
    return (_cpu_ticks(pid) - before) * 1000 / TICK


def _run(lab: Any, address: str) -> tuple[str, float]:
    argv = ["env", "-u", "DOCKER_HOST", "docker", "run", "-d", "--network", NET]
    out = lab.run([*argv, "--ip6", address, IMAGE, "sleep", "infinity"]).stdout.strip()
    return out, time.perf_counter()


def _rm(lab: Any, cid: str) -> float:
    lab.run(["env", "-u", "DOCKER_HOST", "docker", "rm", "-f", cid])
    return time.perf_counter()


def _first_replies(
    lab: Any, pinger: Pinger, first: int, n: int, settle: Any, gone: Any = None
) -> tuple[list[float], int, list[float]]:
    """n runs from address index `first`: replies (ms), lost, rm -> gone (ms, with `gone`)."""
    replies: list[float] = []
    lost = 0
    removed: list[float] = []
    for i in range(first, first + n):
        settle()
        cid, returned = _run(lab, _addr(i))
        sent = time.perf_counter()
        took = pinger.first_reply(_addr(i), REPLY_TIMEOUT)
        if took is None:
            lost += 1
        else:
            replies.append((sent - returned + took) * 1000)
        settle()
        t_rm = _rm(lab, cid)
        if gone is not None:
            t_gone = gone(_addr(i))
            if t_gone is None:
                raise RuntimeError(f"{_addr(i)} still proxied 10 s after docker rm -f")
            removed.append((t_gone - t_rm) * 1000)
    return replies, lost, removed


class _EventCounter:
    """Counts the events dockerd sends on a stream with v6gen's filter (GET /events with
    `since` replays only the last 256 dockerd keeps)."""

    def __init__(self, socket_path: Path) -> None:
        self.count = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(socket_path))
        query = urllib.parse.urlencode({"filters": json.dumps(EVENT_FILTERS)})
        self._sock.sendall(f"GET /events?{query} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with self._sock.makefile("rb") as stream:
            for line in stream:
                if line.startswith(b"{") and b'"Action"' in line:
                    self.count += 1

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)


def _churn(lab: Any, cid: str) -> int:
    """EVENTS container events (`docker network connect`/`disconnect` pairs); how many dockerd
    sent with v6gen's filter."""
    counter = _EventCounter(lab.path("/run/docker.sock"))
    try:
        time.sleep(0.2)
        for _ in range(EVENTS // 2):
            lab.docker.call("POST", f"/networks/{NET2}/connect", {"Container": cid})
            lab.docker.call("POST", f"/networks/{NET2}/disconnect", {"Container": cid})
        time.sleep(0.5)
        return counter.count
    finally:
        counter.close()


def _network(lab: Any, name: str, subnet: str) -> None:
    lab.docker.call("POST", "/networks/create", {
        "Name": name, "EnableIPv6": True, "CheckDuplicate": True,
        "IPAM": {"Config": [{"Subnet": subnet}]},
    })  # fmt: skip


def run(workdir: Path) -> Section:
    sec = Section()
    lab = start_lab(workdir / "instant")
    rows: dict[str, tuple[list[float], int]] = {}
    gone_ms: list[float] = []
    mem: dict[str, Any] = {}
    try:
        _network(lab, NET, SUBNET)
        _network(lab, NET2, SUBNET2)
        lab.lan().run(
            "sysctl -qw net.ipv6.neigh.eth0.retrans_time_ms=1000"
            " net.ipv6.neigh.eth0.mcast_solicit=3"
        )
        idx = ifindex(lab.host.pid, "uplink0")
        with (
            Pinger(lab.lan().pid) as pinger,
            ProxyTable(lab.host.pid) as table,
            NotifySocket() as notify,
        ):
            watch = WatchProc(lab, notify=notify)
            try:
                watch.wait_ready()
                time.sleep(1.0)
                mem["watch_rss_start_kib"] = _rss_kib(watch.pid)

                def quiet() -> None:
                    wait_quiet(watch.log, quiet=0.3, timeout=10)

                def gone(address: str) -> float | None:
                    return table.wait(lambda e: (idx, address) not in e, timeout=10)

                _first_replies(lab, pinger, 0, 1, quiet, gone)  # warm-up
                replies, lost, gone_ms = _first_replies(lab, pinger, 1, TRIALS, quiet, gone)
                rows["watch"] = (replies, lost)
                log(f"instant: watch first reply p50 {pct(replies, 50):.2f} ms, {lost} lost")
                cid, _ = _run(lab, _addr(100))
                quiet()
                mem["events"] = _churn(lab, cid)
                wait_quiet(watch.log, quiet=2.0, timeout=60)
                mem["watch_rss_after_events_kib"] = _rss_kib(watch.pid)
                mem["watch_idle_cpu_ms"] = _idle_cpu_ms(watch.pid)
                errors = watch.count("fast path failed|sync failed|Traceback")
                mem["watch_errors"] = errors
                _rm(lab, cid)
                quiet()
            finally:
                watch.stop()
            res = lab.v6gen("clean")
            if res.returncode != 0 or lab.proxy_entries():
                raise RuntimeError(f"v6gen clean left {lab.proxy_entries()}: {res.stderr}")
            lab.run("sysctl -qw net.ipv6.conf.all.forwarding=1")
            conf = workdir / "instant" / "ndppd.conf"
            conf.write_text(NDPPD_CONF)
            ndppd = lab.host.spawn("ndppd", ["ndppd", "-c", str(conf)])
            time.sleep(1.0)
            mem["ndppd_rss_kib"] = _rss_kib(ndppd.pid)
            _first_replies(lab, pinger, 200, 1, lambda: None)  # warm-up
            replies, lost, _ = _first_replies(lab, pinger, 201, TRIALS, lambda: None)
            rows["ndppd"] = (replies, lost)
            mem["ndppd_idle_cpu_ms"] = _idle_cpu_ms(ndppd.pid)
            log(f"instant: ndppd first reply p50 {pct(replies, 50):.2f} ms, {lost} lost")
            lab.host.stop_proc("ndppd")

            # ndppd 0.2.5's `auto` rule finds the bridge for the first solicitation after it
            # starts and then for no other address ("session::send_solicit() (_ifaces.size() =
            # 0)" with -vvv): so also ndppd at its best, started afresh before each run.
            def fresh() -> None:
                lab.host.stop_proc("ndppd")
                lab.host.spawn("ndppd", ["ndppd", "-c", str(conf)])
                time.sleep(0.5)

            replies, lost, _ = _first_replies(lab, pinger, 230, TRIALS, fresh)
            rows["ndppd_fresh"] = (replies, lost)
            log(f"instant: fresh ndppd first reply p50 {pct(replies, 50):.2f} ms, {lost} lost")
            lab.host.stop_proc("ndppd")
            rows["none"] = _first_replies(lab, pinger, 300, NONE_TRIALS, lambda: None)[:2]
    finally:
        lab.stop()

    for name in ("watch", "ndppd", "ndppd_fresh"):
        replies, lost = rows[name]
        key = f"instant_{name}_first_reply"
        sec.metrics[f"{key}_p50_ms"] = _pct(replies, lost, 50)
        sec.metrics[f"{key}_p95_ms"] = _pct(replies, lost, 95)
        sec.metrics[f"{key}_answered"] = len(replies)
        sec.detail[f"{key}_ms"] = {**summary(replies, 2), "lost": lost}
    replies, lost = rows["none"]
    sec.metrics["instant_none_replied"] = len(replies)
    sec.metrics["instant_none_runs"] = len(replies) + lost
    sec.metrics["instant_watch_rm_to_gone_p50_ms"] = rnd(pct(gone_ms, 50), 1)
    sec.metrics["instant_watch_rm_to_gone_p95_ms"] = rnd(pct(gone_ms, 95), 1)
    sec.detail["instant_watch_rm_to_gone_ms"] = summary(gone_ms, 1)
    mib = 1024
    sec.metrics.update(
        watch_rss_start_mib=rnd(mem["watch_rss_start_kib"] / mib, 1),
        watch_rss_after_1000_events_mib=rnd(mem["watch_rss_after_events_kib"] / mib, 1),
        ndppd_rss_mib=rnd(mem["ndppd_rss_kib"] / mib, 1),
        watch_idle_cpu_ms_per_10s=mem["watch_idle_cpu_ms"],
        ndppd_idle_cpu_ms_per_10s=mem["ndppd_idle_cpu_ms"],
    )
    sec.detail["instant_memory"] = mem
    sec.notes.append(
        f"instant: dockerd 20.10 in the lab, LAN NDP timers at kernel defaults; {TRIALS} runs "
        "per row of `docker run -d --ip6` then one ICMPv6 echo from a raw socket in the LAN "
        f"namespace, timed from the CLI's return to the reply; ndppd 0.2.5 `auto` rule for "
        f"{SUBNET}; nothing = no proxy ({NONE_TRIALS} runs, 3 s each); memory = VmRSS, after "
        f"{mem.get('events')} events of connect/disconnect churn; idle CPU over {IDLE:.0f} s"
    )
    return sec
