"""sync_cold_1000_s / sync_noop_1000_s / docker_api_calls_per_sync, and the docker SDK's default
listing for comparison.

Lab: real networkd 252, real kernel, networkd-dispatcher (hooks as sync installs them). Docker is
a replay of captured Docker Engine API JSON on a unix socket inside the lab's /run
(bench/replay.py): 1,000 running containers on 10 IPv6 networks, templated from
tests/fixtures/docker/seed_running.json and from the lab dockerd's inspect of the seed container.
v6gen finds it through /etc/v6gen/config.yaml `docker_host:`. The replay counts requests.

- cold: `v6gen clean` first (no files, no entries, no hooks), then `v6gen sync --json`: 1,000
  entries, 3 files, hooks, one networkd reload. Wall time of the whole `v6gen` process.
- no-op: right after (networkd and the dispatcher settled), the same command; the report must
  say up to date, files_written/removed and hooks_changed empty, reloaded false, and no file
  under the directories v6gen writes may change (mtime + bytes).
- API calls per sync: the replay's request count for one sync, at 10 and at 1,000 containers.
- SDK default: bench/sdk_default.py, v6gen's own engine.sync with Docker asked through
  DockerClient.containers.list() (one inspect per container).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.lab.labhost import REPO

from .common import Section, log, median, rnd, summary, timed_run
from .labutil import SEED, py_env, start_lab, sync_json, v6gen_argv, wait_quiet
from .replay import Replay, synthesize

N = 1000
SMALL = 10
NETWORKS = 10
COLD_TRIALS = 3
NOOPS_PER_COLD = 2
SDK_NOOPS = 3
SOCKET = "/run/bench-docker.sock"
WATCHED = (
    "/etc/systemd/network",
    "/etc/systemd/networkd.conf.d",
    "/etc/sysctl.d",
    "/etc/networkd-dispatcher",
    "/var/lib/v6gen",
)


def _snapshot(lab: Any) -> dict[str, tuple[int, bytes]]:
    files = {}
    for d in WATCHED:
        for p in lab.path(d).rglob("*"):
            if p.is_file():
                files[str(p)] = (p.stat().st_mtime_ns, p.read_bytes())
    return files


DEBIAN_PY = "/usr/bin/python3"


def debian_python_ok() -> bool:
    """Debian's python3 with the packaged libraries v6gen needs (python3-docker, -typer,
    -dbus-next, -jinja2, -yaml): what the Debian package runs."""
    res = subprocess.run(
        [DEBIAN_PY, "-c", "import docker, typer, dbus_next, jinja2, yaml"],
        capture_output=True, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return res.returncode == 0


def _settle(lab: Any) -> None:
    time.sleep(0.2)
    lab.wait_configured("uplink0", timeout=30)
    wait_quiet(lab.logdir / "dispatcher.log", quiet=0.3, timeout=10)


def _sdk_sync(lab: Any) -> tuple[dict[str, Any], float, float]:
    path = f"PYTHONPATH={REPO / 'src'}:{REPO}"
    cmd = [*py_env(), path, sys.executable, "-m", "bench.sdk_default"]
    res, took = timed_run([*lab.host.prefix(), *cmd], bound=300, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"sdk_default sync exit {res.returncode}\n{res.stdout}\n{res.stderr}")
    out = json.loads(res.stdout)
    return out["report"], took, out["list_s"]


def _clean(lab: Any) -> float:
    res, took = timed_run(v6gen_argv(lab, "clean"), bound=120, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"v6gen clean exit {res.returncode}: {res.stdout}{res.stderr}")
    if lab.proxy_entries():
        raise RuntimeError(f"{len(lab.proxy_entries())} proxy entries left after clean")
    return took


def _check_noop(report: dict[str, Any], before: Any, after: Any) -> list[str]:
    problems = []
    if not report["up_to_date"]:
        problems.append("not up to date")
    for key in ("files_written", "files_removed", "hooks_changed", "added", "removed", "sysctls"):
        if report.get(key):
            problems.append(f"{key}: {report[key][:3]}")
    if report["reloaded"]:
        problems.append("reloaded networkd")
    if before != after:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        problems.append(f"files changed on disk: {changed[:3]}")
    return problems


def run(workdir: Path) -> Section:
    sec = Section()
    lab = start_lab(workdir / "sync")
    try:
        # A real inspect body from the lab's dockerd, as the template for the replay's.
        lab.compose_up(SEED)
        (seed,) = lab.docker.get_json("/containers/json")
        inspect_tmpl = lab.docker.get_json(f"/containers/{seed['Id']}/json")
        lab.compose_down(SEED)
        small_list, small_inspects = synthesize(SMALL, NETWORKS, inspect_tmpl)
        big_list, big_inspects = synthesize(N, NETWORKS, inspect_tmpl)
        sec.detail["replay_bytes"] = {
            "containers_json_1000": len(big_list),
            "inspect_body_avg": sum(map(len, big_inspects.values())) // N,
        }
        lab.write("/etc/v6gen/config.yaml", f"docker_host: unix://{SOCKET}\n")
        with Replay(lab.path(SOCKET), {"/containers/json": small_list, **small_inspects}) as rp:
            # ---- 10 containers: API calls, both ways
            before = rp.total()
            report, _ = sync_json(lab)
            calls_small = rp.total() - before
            assert len(report["added"]) == SMALL, report["added"]
            _settle(lab)
            before = rp.total()
            _sdk_report, _, _ = _sdk_sync(lab)
            sdk_calls_small = rp.total() - before

            # ---- 1,000 containers
            rp.set_bodies({"/containers/json": big_list, **big_inspects})
            cold, noop, clean, calls_big, noop_problems = [], [], [], [], []
            routes: dict[str, int] = {}
            for _ in range(COLD_TRIALS):
                clean.append(_clean(lab))
                _settle(lab)
                before = rp.total()
                report, took = sync_json(lab)
                calls_big.append(rp.total() - before)
                if len(report["added"]) != N or not report["reloaded"]:
                    raise RuntimeError(
                        f"cold sync: {len(report['added'])} added, reloaded {report['reloaded']}"
                    )
                cold.append(took)
                _settle(lab)
                if len(lab.proxy_entries()) != N:
                    raise RuntimeError(f"{len(lab.proxy_entries())} entries after the cold sync")
                for _ in range(NOOPS_PER_COLD):
                    snap = _snapshot(lab)
                    before, by_route = rp.total(), dict(rp.requests)
                    report, took = sync_json(lab)
                    calls_big.append(rp.total() - before)
                    routes = {r: c - by_route.get(r, 0) for r, c in rp.requests.items()}
                    routes = {r: c for r, c in routes.items() if c}
                    noop.append(took)
                    noop_problems += _check_noop(report, snap, _snapshot(lab))
            log(f"sync 1000: cold median {median(cold):.2f} s, no-op median {median(noop):.2f} s")

            # ---- the same no-op under Debian's python3 and its packaged libraries (the .deb)
            deb_noop: list[float] = []
            if debian_python_ok():
                sync_json(lab, python=DEBIAN_PY)  # bytecode warm-up, not counted
                for _ in range(NOOPS_PER_COLD + 1):
                    snap = _snapshot(lab)
                    report, took = sync_json(lab, python=DEBIAN_PY)
                    deb_noop.append(took)
                    noop_problems += [
                        f"debian: {p}" for p in _check_noop(report, snap, _snapshot(lab))
                    ]

            # ---- the SDK's default listing, same engine
            sdk_noop, sdk_list, sdk_calls = [], [], []
            for _ in range(SDK_NOOPS):
                snap = _snapshot(lab)
                before = rp.total()
                report, took, list_s = _sdk_sync(lab)
                sdk_calls.append(rp.total() - before)
                sdk_noop.append(took)
                sdk_list.append(list_s)
                noop_problems += [f"sdk: {p}" for p in _check_noop(report, snap, _snapshot(lab))]
            _clean(lab)
            _settle(lab)
            before = rp.total()
            report, sdk_cold, sdk_cold_list = _sdk_sync(lab)
            sdk_calls.append(rp.total() - before)
            if len(report["added"]) != N:
                raise RuntimeError(f"sdk cold sync added {len(report['added'])}")
            log(
                f"sdk default: no-op median {median(sdk_noop):.2f} s "
                f"(listing {median(sdk_list):.2f} s), {median(sdk_calls):.0f} API calls"
            )
    finally:
        lab.stop()

    if len(set(calls_big)) != 1:
        sec.notes.append(f"API calls per sync varied at 1,000: {sorted(set(calls_big))}")
    sec.metrics.update(
        sync_cold_1000_s=rnd(median(cold), 3),
        sync_noop_1000_s=rnd(median(noop), 3),
        sync_noop_1000_files_written=0 if not noop_problems else None,
        sync_noop_1000_reloads=0 if not noop_problems else None,
        docker_api_calls_per_sync=max(calls_big),
        docker_api_calls_per_sync_10=calls_small,
        docker_api_calls_per_sync_1000=max(calls_big),
        sdk_default_api_calls_per_sync_10=sdk_calls_small,
        sdk_default_api_calls_per_sync_1000=max(sdk_calls),
        sdk_default_sync_noop_1000_s=rnd(median(sdk_noop), 3),
        sdk_default_sync_cold_1000_s=rnd(sdk_cold, 3),
        sdk_default_listing_1000_s=rnd(median(sdk_list), 3),
        clean_1000_s=rnd(median(clean), 3),
        sync_noop_1000_debian_python_s=rnd(median(deb_noop), 3) if deb_noop else None,
    )
    sec.detail.update(
        sync_cold_1000_s=summary(cold, 3),
        sync_noop_1000_s=summary(noop, 3),
        sdk_default_sync_noop_1000_s=summary(sdk_noop, 3),
        sdk_default_listing_1000_s=summary([*sdk_list, sdk_cold_list], 3),
        clean_1000_s=summary(clean, 3),
        sync_noop_1000_debian_python_s=summary(deb_noop, 3),
        docker_api_requests_by_route_one_v6gen_sync=routes,
        sync_noop_problems=noop_problems,
    )
    if noop_problems:
        sec.notes.append(f"NO-OP SYNC WAS NOT A NO-OP: {noop_problems[:5]}")
    sec.notes.append(
        f"sync: replay of captured Docker API JSON (1,000 containers templated from captured "
        f"bodies, {NETWORKS} networks) on a unix socket in the lab; real networkd 252 + kernel + "
        f"dispatcher; wall time of the `v6gen sync` process; cold = after `v6gen clean`, median "
        f"of {COLD_TRIALS}; no-op median of {COLD_TRIALS * NOOPS_PER_COLD}; SDK default = same "
        f"engine, DockerClient.containers.list()"
    )
    return sec
