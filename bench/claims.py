"""claims_*: issue 23 part 3 and issue 22 part 1, side by side with v6gen as it was before them
(df5f463, `git archive` of this repository into bench/.cache, run the same way), in one lab.

Lab: networkd 252, dockerd 20.10, `v6gen watch` running; the LAN neighbour bridged with a
second host (tests/lab/lanhosts.py: `hostb`, set up as v6gen leaves a host). The LAN
neighbour's NDP timers are the kernel's defaults (reachable 15-45 s, RetransTimer 1 s).

1. start -> withdrawn: the LAN neighbour holds an address (on br0, no entry for it on the
   Docker host); `docker run -d --ip6` of a container on it; from the CLI's start to the
   moment the entry watch's fast path added is gone again (rtnetlink dump every 1 ms).
   Baseline: the entry stays (checked for WITHDRAW_WAIT s).
2. A container moved between two v6gen hosts: hostb proxies the address and holds it (on its
   lo: it answers the LAN's echo), the LAN neighbour pings it once (REACHABLE at hostb's
   MAC); hostb drops it ("compose down", and a blackhole route: see _moved), a container on
   it starts on the lab host. From the
   entry's appearance at the new host to the first echo reply the LAN neighbour gets (it
   sends one every 10 ms from a raw socket, tests/lab/lanping.py), the probe included.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.lab.image import IMAGE
from tests.lab.labhost import Lab
from tests.lab.lanhosts import second_host
from tests.lab.lanping import Pinger
from tests.lab.watchproc import NotifySocket, WatchProc

from . import CACHE, REPO
from .common import ProxyTable, Section, ifindex, log, pct, rnd, summary
from .labutil import start_lab, wait_quiet

BASELINE = "df5f463"
TRIALS = 10
BASELINE_MOVES = 2  # each waits out the LAN's reachable time, ~20-50 s
WITHDRAW_WAIT = 5.0
MOVE_WAIT = 90.0
NET, SUBNET = "claims", "2001:db8::b:0/112"


def _baseline_src() -> Path:
    """src/ of the baseline, next to the generators/ and dispatcher-hooks/ it reads."""
    dest = CACHE / f"tree-{BASELINE}"
    if not (dest / "src" / "v6gen").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", BASELINE, "src/v6gen", "generators",
             "dispatcher-hooks"],
            capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=60)
    return dest / "src"


def _watch(lab: Lab, src: Path | None, notify: NotifySocket) -> WatchProc:
    watch = WatchProc(lab, env={"PYTHONPATH": str(src)} if src else None, notify=notify)
    watch.wait_ready()
    wait_quiet(watch.log, quiet=0.3, timeout=30)
    return watch


def _withdrawn(lab: Lab, table: ProxyTable, idx: int, address: str) -> float | None:
    """Seconds from `docker run`'s start until the entry was gone after having been there."""
    lab.lan().run(f"ip addr add {address}/128 dev br0 nodad")
    seen = False

    def gone(entries: set[tuple[int, str]]) -> bool:
        nonlocal seen
        seen = seen or (idx, address) in entries
        return seen and (idx, address) not in entries

    t0 = time.perf_counter()
    box: list[float | None] = []
    waiter = threading.Thread(target=lambda: box.append(table.wait(gone, WITHDRAW_WAIT)))
    waiter.start()
    lab.run(f"docker run -d --network {NET} --ip6 {address} {IMAGE} sleep infinity")
    waiter.join()
    lab.run(f"docker rm -f $(docker ps -q --filter network={NET})")
    lab.lan().run(f"ip addr del {address}/128 dev br0")
    if not seen:
        raise RuntimeError(f"watch never proxied {address}: see its log")
    return None if box[0] is None else box[0] - t0


def _moved(
    lab: Lab, hostb: Any, pinger: Pinger, table: ProxyTable, idx: int, address: str
) -> tuple[float | None, float | None]:
    """Seconds to the LAN's first echo reply: from the entry at the new host, and from the
    later of the entry and `docker run -d`'s return (the container running: on dockerd 20.10
    the fast path adds the entry at `connect`, ~0.6 s before the container can answer)."""
    hostb.run(f"ip addr add {address}/128 dev lo && ip -6 neigh add proxy {address} dev hb0")
    if all(pinger.first_reply(address, 3.0) is None for _ in range(3)):
        raise RuntimeError(f"hostb did not answer for {address}")
    # hostb drops what still comes to it, as the 44 s were measured: a host that
    # forwards would send it back onto the LAN (its on-link /64) and hide the difference.
    hostb.run(
        f"ip -6 neigh del proxy {address} dev hb0 && ip addr del {address}/128 dev lo"
        f" && ip -6 route add blackhole {address}/128"
    )
    box: list[float | None] = []
    waiter = threading.Thread(
        target=lambda: box.append(table.wait(lambda e: (idx, address) in e, 30))
    )
    waiter.start()
    lab.run(f"docker run -d --network {NET} --ip6 {address} {IMAGE} sleep infinity")
    returned = time.perf_counter()
    waiter.join()
    reply, deadline = None, time.perf_counter() + MOVE_WAIT
    while reply is None and time.perf_counter() < deadline:
        if pinger.first_reply(address, 0.01) is not None:
            reply = time.perf_counter()
    lab.run(f"docker rm -f $(docker ps -q --filter network={NET})")
    hostb.run(f"ip -6 route del blackhole {address}/128")
    if box[0] is None:
        raise RuntimeError(f"watch never proxied {address}: see its log")
    if reply is None:
        return None, None
    return reply - box[0], reply - max(box[0], returned)


def run(workdir: Path) -> Section:
    sec = Section()
    baseline = _baseline_src()
    lab = start_lab(workdir / "claims")
    rows: dict[str, list[float | None]] = {}
    moved: dict[str, list[tuple[float | None, float | None]]] = {}
    try:
        hostb = second_host(lab)
        # The kernel's NDP timers on the LAN side, as on a real LAN (the lab tunes them).
        lab.lan().run(
            "sysctl -qw net.ipv6.neigh.br0.retrans_time_ms=1000 net.ipv6.neigh.br0.mcast_solicit=3"
        )
        lab.run(f"docker network create --ipv6 --subnet {SUBNET} {NET}")
        idx = ifindex(lab.host.pid, "uplink0")
        with (
            Pinger(lab.lan().pid) as pinger,
            ProxyTable(lab.host.pid) as table,
            NotifySocket() as notify,
        ):
            for name, src in (("v6gen", None), ("baseline", baseline)):
                watch = _watch(lab, src, notify)
                try:
                    n = TRIALS if src is None else 1
                    rows[f"withdrawn_{name}"] = [
                        _withdrawn(lab, table, idx, f"2001:db8::b:{100 + i:x}") for i in range(n)
                    ]
                    moves = TRIALS if src is None else BASELINE_MOVES
                    base = 200 if src is None else 300
                    moved[name] = [
                        _moved(lab, hostb, pinger, table, idx, f"2001:db8::b:{base + i:x}")
                        for i in range(moves)
                    ]
                    rows[f"moved_{name}"] = [m[0] for m in moved[name]]
                    rows[f"running_{name}"] = [m[1] for m in moved[name]]
                finally:
                    watch.stop()
                lab.v6gen("clean")
                log(f"claims: {name}: {rows[f'withdrawn_{name}']} / {rows[f'moved_{name}']}")
    finally:
        lab.stop()

    def ms(values: list[float | None]) -> list[float]:
        return [v * 1000 for v in values if v is not None]

    for kind in ("withdrawn", "moved", "running"):
        for name in ("v6gen", "baseline"):
            values = rows[f"{kind}_{name}"]
            key = f"claims_{kind}_{name}"
            sec.metrics[f"{key}_p50_ms"] = rnd(pct(ms(values), 50), 1) if ms(values) else None
            sec.metrics[f"{key}_max_ms"] = rnd(max(ms(values)), 1) if ms(values) else None
            sec.metrics[f"{key}_never"] = sum(v is None for v in values)
            sec.detail[f"{key}_ms"] = summary(ms(values), 1)
    sec.notes.append(
        f"claims: dockerd 20.10, watch; start -> withdrawn over {TRIALS} runs (baseline "
        f"{BASELINE}: 1 run, {WITHDRAW_WAIT:.0f} s); moved container: entry at the new host -> "
        f"first LAN echo reply (and from the later of the entry and `docker run -d`'s return), LAN "
        f"timers at kernel defaults, {TRIALS} runs (baseline: "
        f"{BASELINE_MOVES} runs, up to {MOVE_WAIT:.0f} s each)"
    )
    return sec
