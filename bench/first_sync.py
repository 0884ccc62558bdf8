"""first_sync_*: issue 22, the LAN's first ping right after the first `v6gen sync` on a fresh
lab host: answered without a retransmission (the LAN neighbour's RetransTimer is the kernel's
1 s, so a reply under 1 s had none), this checkout against the baseline (the commit before
issue 22, bench/first_network.baseline_src) side by side.

Each run is a fresh lab (networkd 252, dockerd 20.10) whose host has DAD at the kernel's
default, as a real host has (the lab turns it off host-wide for its own speed): `compose up` of
the seed, then at once `v6gen sync`, then an echo from a raw socket in the LAN namespace as the
sync returns. What the baseline lost (1,001-2,029 ms in the first tries): DAD on the network's
new bridge, still running when sync returned (v6gen.bridges).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from tests.lab.lanping import Pinger

from .common import Section, log, pct, rnd, summary
from .first_network import baseline_src
from .labutil import PROBE, SEED, start_lab

RUNS = {"v6gen": 20, "baseline": 5}
REPLY_TIMEOUT = 5.0


def _once(workdir: Path, src: Path | None) -> float:
    lab = start_lab(workdir)
    try:
        lab.run("sysctl -qw net.ipv6.conf.default.accept_dad=1")
        lab.lan().run(
            "sysctl -qw net.ipv6.neigh.eth0.retrans_time_ms=1000"
            " net.ipv6.neigh.eth0.mcast_solicit=3"
        )
        lab.compose_up(SEED)
        with Pinger(lab.lan().pid) as pinger:
            if src is None:
                res = lab.v6gen("sync")
            else:
                env = ["env", "-u", "DOCKER_HOST", "-u", "DBUS_SYSTEM_BUS_ADDRESS"]
                argv = [*env, f"PYTHONPATH={src}", sys.executable, "-m", "v6gen", "sync"]
                res = lab.host.run(argv, check=False)
            returned = time.perf_counter()
            if res.returncode != 0:
                raise RuntimeError(f"v6gen sync exit {res.returncode}: {res.stderr[-500:]}")
            took = pinger.first_reply(PROBE, REPLY_TIMEOUT)
            return math.inf if took is None else (time.perf_counter() - returned) * 1000
    finally:
        lab.stop()


def run(workdir: Path) -> Section:
    sec = Section()
    sources: dict[str, Any] = {"v6gen": None, "baseline": baseline_src()}
    for name, n in RUNS.items():
        replies = [_once(workdir / f"first-sync-{name}-{i}", sources[name]) for i in range(n)]
        at_once = sum(1 for r in replies if r < 1000)
        log(f"first_sync {name}: {at_once} of {n} without a retransmission")
        finite = [r for r in replies if not math.isinf(r)]
        sec.metrics[f"first_sync_{name}_at_once"] = at_once
        sec.metrics[f"first_sync_{name}_runs"] = n
        sec.metrics[f"first_sync_{name}_p50_ms"] = rnd(pct(replies, 50), 2) if finite else None
        sec.detail[f"first_sync_{name}_ms"] = {**summary(finite, 2), "lost": n - len(finite)}
    sec.notes.append(
        "first_sync: a fresh lab per run, host DAD at the kernel default, `compose up` of the "
        "seed then `v6gen sync`, one echo from the LAN as sync returns; at once = answered "
        "under the LAN's 1 s RetransTimer"
    )
    return sec
