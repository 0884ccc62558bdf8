"""first_network_*: issue 22, the first container on a network Docker has just created:
`docker run -d` returned -> the first reply to a LAN ping sent at once, with `v6gen watch`
running, on dockerd 20.10 (bookworm) and 28.5 (sid), this checkout against the baseline (the
commit before issue 22, exported from git into bench/.cache) side by side in one lab each.

The lab turns DAD off host-wide (tests/lab/labhost.py: it would slow every bring-up); these
rows are about DAD, so the lab host's `default.accept_dad` is put back to the kernel's 1 before
any network is made, as on a real host. The LAN neighbour's NDP timers are the kernel's
defaults. Each run creates a fresh network (sid: gateway mode `routed`, which the LAN can
reach), runs one container on it with a fixed address, pings it from a raw socket in the LAN
namespace as the CLI returns (tests/lab/lanping.py), then removes both; another container runs
throughout on a network of its own (a host v6gen already serves). A run with no reply within
5 s counts as slower than any.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.lab.image import IMAGE
from tests.lab.lanping import Pinger
from tests.lab.watchproc import WatchProc

from . import CACHE, REPO
from .common import Section, log, pct, rnd, summary
from .labutil import start_lab, wait_quiet

BASELINE = "df5f463"  # main before issue 22
RELEASES = ("bookworm", "sid")
TRIALS = 10
REPLY_TIMEOUT = 5.0
ROUTED = {"com.docker.network.bridge.gateway_mode_ipv6": "routed"}


def baseline_src(commit: str = BASELINE) -> Path:
    """The baseline's src/ exported from this repository's git (read-only, under the bench's
    cache, which the release labs see at its own path)."""
    target = CACHE / f"baseline-{commit}"
    if not (target / "generators").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", commit, "src", "generators", "dispatcher-hooks"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


def _trial(lab: Any, pinger: Pinger, release: str, n: int) -> float:
    net, prefix = f"fresh{n}", f"2001:db8::{0x40 + n:x}"
    address = f"{prefix}:10"
    ipam = {"Config": [{"Subnet": f"{prefix}:0/112"}]}
    body: dict[str, Any] = {"Name": net, "EnableIPv6": True, "IPAM": ipam}
    if release == "sid":
        body["Options"] = ROUTED
    lab.docker.call("POST", "/networks/create", body)
    argv = ["env", "-u", "DOCKER_HOST", "docker", "run", "-d", "--network", net, "--ip6", address]
    cid = lab.run([*argv, IMAGE, "sleep", "infinity"]).stdout.strip()
    returned = time.perf_counter()
    took = pinger.first_reply(address, REPLY_TIMEOUT)
    replied = math.inf if took is None else (time.perf_counter() - returned) * 1000
    lab.run(["env", "-u", "DOCKER_HOST", "docker", "rm", "-f", cid])
    lab.docker.call("DELETE", f"/networks/{net}")
    return replied


def _rows(workdir: Path, release: str) -> dict[str, list[float]]:
    options = {} if release == "bookworm" else {"release": release}
    lab = start_lab(workdir / f"first-network-{release}", **options)
    found: dict[str, list[float]] = {}
    try:
        lab.run("sysctl -qw net.ipv6.conf.default.accept_dad=1")
        lab.lan().run(
            "sysctl -qw net.ipv6.neigh.eth0.retrans_time_ms=1000"
            " net.ipv6.neigh.eth0.mcast_solicit=3"
        )
        # A host that already serves a container: the fast path then only adds an entry.
        resident: dict[str, Any] = {"Name": "resident", "EnableIPv6": True}
        resident["IPAM"] = {"Config": [{"Subnet": "2001:db8::3f:0/112"}]}
        if release == "sid":
            resident["Options"] = ROUTED
        lab.docker.call("POST", "/networks/create", resident)
        argv = ["env", "-u", "DOCKER_HOST", "docker", "run", "-d", "--network", "resident"]
        lab.run([*argv, "--ip6", "2001:db8::3f:10", IMAGE, "sleep", "infinity"])
        variants = {"v6gen": {}, "baseline": {"PYTHONPATH": str(baseline_src())}}
        n = 0
        with Pinger(lab.lan().pid) as pinger:
            for name, env in variants.items():
                watch = WatchProc(lab, env=env)
                try:
                    wait_quiet(watch.log, quiet=1.0, timeout=30)
                    found[name] = []
                    for _ in range(TRIALS):
                        found[name].append(_trial(lab, pinger, release, n))
                        n += 1
                        wait_quiet(watch.log, quiet=0.3, timeout=10)
                finally:
                    watch.stop()
                log(f"first_network {release} {name}: p50 {pct(found[name], 50):.1f} ms")
    finally:
        lab.stop()
    return found


def run(workdir: Path) -> Section:
    sec = Section()
    for release in RELEASES:
        docker = "20.10" if release == "bookworm" else "28.5"
        for name, replies in _rows(workdir, release).items():
            key = f"first_network_{name}_docker{docker.replace('.', '')}"
            finite = [r for r in replies if not math.isinf(r)]
            p50 = pct(replies, 50)
            sec.metrics[f"{key}_p50_ms"] = None if math.isinf(p50) else rnd(p50, 1)
            sec.metrics[f"{key}_max_ms"] = rnd(max(replies), 1) if finite else None
            sec.detail[f"{key}_ms"] = {**summary(finite, 1), "lost": len(replies) - len(finite)}
    sec.notes.append(
        f"first_network: {TRIALS} runs per row, each a new network and its first container, "
        "LAN ping at `docker run -d`'s return; host DAD at the kernel default; baseline = "
        f"watch from commit {BASELINE} in the same lab"
    )
    sec.detail["first_network_baseline"] = json.dumps({"commit": BASELINE})
    return sec
