"""firewall_judge_noop_1000_ms / firewall_judge_cold_1000_ms (issue 20): what judging the host's
firewalls adds to a no-op sync of 1,000 containers, side by side in one run.

Lab: networkd 252, the Docker replay of sync_scale (1,000 containers on 10 /120 networks in the
uplink's prefix), each network routed to a veth of its own named like a Docker bridge, and
Debian's ufw enabled (so there are rules to read and every address is judged: ICMPv6 only);
judging alone is also timed before ufw is enabled (no IPv6 rules: no replay at all).
Inside the lab, `python -m bench.gatekeepers` runs engine.sync in one process, alternating a
sync without the firewall adapter (Docker's ip6tables verdict only, as before issue 20) and one
with it as the CLI builds it (a fresh HostFirewalls with its cache file, as a new process has):
the difference of the medians is what judging adds to a no-op. Cold: the cache file removed
first, so the whole replay runs (all rounds, 1,000 addresses).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

TRIALS = 7
N, NETWORKS = 1000, 10
SOCKET = "/run/bench-docker.sock"


def _sync_ms(with_firewalls: bool) -> tuple[float, Any]:
    from v6gen import config as config_mod
    from v6gen import engine, lock
    from v6gen.adapters.docker import DockerAPI
    from v6gen.adapters.firewalls import HostFirewalls
    from v6gen.adapters.kernel import IpKernel
    from v6gen.adapters.networkd import DBusNetworkd
    from v6gen.paths import Paths

    paths = Paths(Path("/"))
    cfg = config_mod.load(paths.config, explicit=False)
    docker = DockerAPI(cfg.docker_host, cfg.docker_timeout)
    firewalls = HostFirewalls(paths.firewall_cache) if with_firewalls else None
    with DBusNetworkd(paths) as networkd:
        adapters = engine.Adapters(docker, networkd, IpKernel(), firewalls)
        ctx = engine.Context(cfg, paths, adapters, True)
        t0 = time.perf_counter()
        with lock.held(paths.lock_file):
            outcome = engine.sync(ctx)
        took = (time.perf_counter() - t0) * 1000
    docker.close()
    return took, outcome


def _judge_ms() -> list[float]:
    """pathjudge.judge alone on the same facts, as a new process would run it (a fresh
    adapter reading its cache file): the rules and routes read, the digest, the stored
    verdicts loaded."""
    from v6gen import config as config_mod
    from v6gen import engine, pathjudge
    from v6gen.adapters.docker import DockerAPI
    from v6gen.adapters.firewalls import HostFirewalls
    from v6gen.adapters.kernel import IpKernel
    from v6gen.adapters.networkd import DBusNetworkd
    from v6gen.paths import Paths

    paths = Paths(Path("/"))
    cfg = config_mod.load(paths.config, explicit=False)
    docker = DockerAPI(cfg.docker_host, cfg.docker_timeout)
    with DBusNetworkd(paths) as networkd:
        ctx = engine.Context(cfg, paths, engine.Adapters(docker, networkd, IpKernel()), True)
        endpoints, facts_docker, host, _ = engine.gather(ctx)
    docker.close()
    took = []
    for _ in range(TRIALS * 3):
        firewalls = HostFirewalls(paths.firewall_cache)
        t0 = time.perf_counter()
        judged = pathjudge.judge(firewalls, endpoints, facts_docker, host)
        took.append((time.perf_counter() - t0) * 1000)
        assert judged.path_verdicts, "nothing judged"
    return took


def main() -> int:
    """Inside the lab: the side-by-side timings, as JSON on stdout ("judge-only": just the
    judging, for the host before ufw is enabled)."""
    from v6gen.paths import Paths

    _sync_ms(True)  # converge: entries, files, the cache file
    if sys.argv[1:] == ["judge-only"]:
        json.dump({"judge": _judge_ms()}, sys.stdout)
        return 0
    without: list[float] = []
    with_: list[float] = []
    problems: list[str] = []
    for _ in range(TRIALS):
        for flag, out in ((False, without), (True, with_)):
            took, outcome = _sync_ms(flag)
            out.append(took)
            if not outcome.changes.empty:
                problems.append(f"not a no-op (firewalls {flag})")
    judge = _judge_ms()
    _, outcome = _sync_ms(True)
    gated: dict[str, int] = {}
    for g in outcome.plan.gated:
        gated[g.blocker.gatekeeper] = gated.get(g.blocker.gatekeeper, 0) + len(g.addresses)
    cold = []
    for _ in range(3):
        cache = Paths(Path("/")).firewall_cache
        for path in (cache, cache.with_suffix(".verdicts")):
            path.unlink(missing_ok=True)
        cold.append(_sync_ms(True)[0])
    json.dump(
        {
            "without": without,
            "with": with_,
            "judge": judge,
            "cold": cold,
            "gated": gated,
            "problems": problems,
        },
        sys.stdout,
    )
    return 0


def run(workdir: Path) -> Any:
    from tests.lab.labhost import REPO
    from tests.lab.packages import ensure_packages

    from .common import Section, log, rnd, summary, timed_run
    from .labutil import py_env, start_lab
    from .replay import Replay, synthesize

    ensure_packages(("ufw", "nftables"))
    sec = Section()
    lab = start_lab(workdir / "gatekeepers")
    try:
        listing, inspects = synthesize(N, NETWORKS, None)
        lab.write("/etc/v6gen/config.yaml", f"docker_host: unix://{SOCKET}\n")
        for k in range(NETWORKS):
            bridge = f"br-bench{k:07d}"
            lab.run(f"ip link add {bridge} type veth peer name bench-peer{k}")
            lab.run(f"ip link set {bridge} up")
            lab.run(f"ip -6 route add 2001:db8::{0x100 + k:x}:0/120 dev {bridge}")
        path = f"PYTHONPATH={REPO / 'src'}:{REPO}"
        cmd = [*lab.host.prefix(), *py_env(), path, sys.executable, "-m", "bench.gatekeepers"]
        with Replay(lab.path(SOCKET), {"/containers/json": listing, **inspects}):
            plain, _ = timed_run([*cmd, "judge-only"], bound=600, check=False)
            lab.run("ufw --force enable")
            res, _ = timed_run(cmd, bound=600, check=False)
        for done in (plain, res):
            if done.returncode != 0:
                raise RuntimeError(
                    f"bench.gatekeepers exit {done.returncode}\n{done.stderr[-3000:]}"
                )
        out = json.loads(res.stdout)
        out["plain"] = json.loads(plain.stdout)["judge"]
    finally:
        lab.stop()
    added = statistics.median(out["with"]) - statistics.median(out["without"])
    log(
        f"judging: {statistics.median(out['judge']):.1f} ms a no-op sync of {N}; sync with - "
        f"without: {added:.1f} ms; cold sync {statistics.median(out['cold']):.0f} ms"
    )
    if out["problems"]:
        sec.notes.append(f"gatekeepers: {sorted(set(out['problems']))}")
    sec.metrics.update(
        firewall_judge_noop_1000_ms=rnd(statistics.median(out["judge"]), 1),
        firewall_judge_noop_1000_no_rules_ms=rnd(statistics.median(out["plain"]), 1),
        firewall_judge_sync_difference_1000_ms=rnd(added, 1),
        firewall_judge_cold_1000_ms=rnd(
            statistics.median(out["cold"]) - statistics.median(out["without"]), 1
        ),
    )
    sec.detail.update(
        sync_noop_1000_without_firewalls_ms=summary(out["without"], 1),
        sync_noop_1000_with_firewalls_ms=summary(out["with"], 1),
        sync_1000_cold_replay_ms=summary(out["cold"], 1),
        pathjudge_1000_ms=summary(out["judge"], 1),
        pathjudge_1000_no_host_firewall_ms=summary(out["plain"], 1),
        gated_addresses=out["gated"],
    )
    return sec


if __name__ == "__main__":
    sys.exit(main())
