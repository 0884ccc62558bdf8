"""`python -m bench [--only NAME,...]`: run the benchmarks, print the table, write
bench/results.json and bench/README-section.md. Root only (namespaces, networkd, dockerd)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import CACHE, RESULTS
from .common import Section, log, machine

# Order: the process-start measurement first, while nothing of ours is running.
SECTIONS = (
    "startup", "hook_restore", "sync_scale", "first_contact", "flap", "watch", "instant", "boot",
    "podman", "gatekeepers", "claims", "prefixes", "instant_sid", "first_network", "first_sync",
    "watch_memory",
)  # fmt: skip
SECTION_FILE = Path(__file__).resolve().parent / "README-section.md"


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    unit: str
    target: str = ""
    check: Callable[[dict[str, Any]], bool | None] | None = None


def _le(key: str, limit: float) -> Callable[[dict[str, Any]], bool | None]:
    return lambda r: None if r.get(key) is None else r[key] <= limit


def _first_contact_ok(r: dict[str, Any]) -> bool | None:
    v, nd = r.get("first_contact_p50_ms"), r.get("first_contact_ndppd_p50_ms")
    if v is None or nd is None:
        return None
    return bool(v <= 1 and v <= nd)


def _instant_ok(r: dict[str, Any]) -> bool | None:
    """ndppd at its best (started afresh before each run: its `auto` rule works once)."""
    v = r.get("instant_watch_first_reply_p50_ms")
    nd = r.get("instant_ndppd_fresh_first_reply_p50_ms")
    if v is None or nd is None:
        return None
    return bool(v <= 10 and v <= nd)


def _noop_ok(r: dict[str, Any]) -> bool | None:
    if r.get("sync_noop_1000_s") is None:
        return None
    return (
        r["sync_noop_1000_s"] <= 0.5
        and r.get("sync_noop_1000_files_written") == 0
        and r.get("sync_noop_1000_reloads") == 0
    )


def _calls_ok(r: dict[str, Any]) -> bool | None:
    a, b = r.get("docker_api_calls_per_sync_10"), r.get("docker_api_calls_per_sync_1000")
    return None if a is None or b is None else a == b


ROWS = (
    Row("hook_restore_1000_ms", "hook: 1,000 entries back after a flap", "ms", "<= 30",
        _le("hook_restore_1000_ms", 30)),
    Row("ip_batch_floor_1000_ms", "  floor: the same file to a bare `ip -6 -batch`", "ms"),
    Row("hook_over_ip_batch_ms", "hook over that bare `ip -6 -batch` (paired median)", "ms",
        "<= 10", _le("hook_over_ip_batch_ms", 10)),
    Row("seed_loop_1000_ms", "seed recipe: one `ip neigh add` per address", "ms"),
    Row("hook_vs_seed_ratio", "seed loop / hook", "x"),
    Row("flap_restore_p50_ms", "flap, 247.3 + hooks: link up -> entry, p50", "ms", "<= 500",
        _le("flap_restore_p50_ms", 500)),
    Row("flap_restore_p95_ms", "flap, 247.3 + hooks: link up -> entry, p95", "ms", "<= 1000",
        _le("flap_restore_p95_ms", 1000)),
    Row("flap_restore_networkd_only_p50_ms", "flap, networkd 247.3 alone, p50", "ms"),
    Row("flap_restore_networkd_only_p95_ms", "flap, networkd 247.3 alone, p95", "ms"),
    Row("flap_restore_quick_p50_ms", "flap down&&up back to back, + hooks, p50", "ms"),
    Row("flap_restore_quick_p95_ms", "flap down&&up back to back, + hooks, p95", "ms"),
    Row("flap_restore_carrier_p50_ms", "carrier loss/return (LAN end), + hooks, p50", "ms"),
    Row("flap_restore_hook_only_quick_p50_ms", "quick flap, hook alone (no networkd re-add), p50",
        "ms"),
    Row("first_contact_p50_ms", "first ping after cache flush, v6gen (delay 0)", "ms",
        "<= 1, <= ndppd", _first_contact_ok),
    Row("first_contact_default_p50_ms", "same, kernel default proxy_delay", "ms"),
    Row("first_contact_ndppd_p50_ms", "same, ndppd 0.2.5 static rule", "ms"),
    Row("sync_cold_1000_s", "sync, 1,000 addresses, everything to do *", "s", "<= 1.5",
        _le("sync_cold_1000_s", 1.5)),
    Row("sync_noop_1000_s", "sync, 1,000 addresses, nothing to do *", "s",
        "<= 0.5, 0 writes/reloads", _noop_ok),
    Row("firewall_judge_noop_1000_ms", "judging the firewalls, in that no-op", "ms",
        "<= 30", _le("firewall_judge_noop_1000_ms", 30)),
    Row("firewall_judge_noop_1000_no_rules_ms", "  the same, no host firewall", "ms"),
    Row("firewall_judge_sync_difference_1000_ms", "  no-op sync with - without judging (ufw)",
        "ms"),
    Row("firewall_judge_cold_1000_ms", "a new ruleset: replay of 1,000 addresses", "ms"),
    Row("docker_api_calls_per_sync", "Docker API calls per sync (10 and 1,000) *", "",
        "constant", _calls_ok),
    Row("sdk_default_api_calls_per_sync_1000", "  SDK default listing: API calls at 1,000 *", ""),
    Row("sdk_default_sync_noop_1000_s", "  SDK default listing: no-op sync *", "s"),
    Row("sdk_default_sync_cold_1000_s", "  SDK default listing: cold sync *", "s"),
    Row("sync_noop_1000_debian_python_s", "  no-op sync under Debian's python3 + libraries *", "s"),
    Row("help_startup_ratio", "`v6gen --help` / `python -c pass`", "x"),
    Row("typer_import_ratio", "`python -c 'import typer'` / `python -c pass`", "x"),
    Row("argparse_import_ratio", "`python -c 'import argparse'` / `python -c pass`", "x"),
    Row("path_python3_pass_ms", "`python3 -c pass`, python3 as found on PATH", "ms"),
    Row("watch_start_to_proxied_p50_ms", "watch: docker start -> entry, p50", "ms", "<= 300",
        _le("watch_start_to_proxied_p50_ms", 300)),
    Row("watch_start_to_proxied_p95_ms", "watch: docker start -> entry, p95", "ms", "<= 1000",
        _le("watch_start_to_proxied_p95_ms", 1000)),
    Row("watch_stop_to_gone_p50_ms", "watch: docker stop -> entry gone, p50", "ms"),
    Row("watch_stop_to_gone_p95_ms", "watch: docker stop -> entry gone, p95", "ms", "<= 2000",
        _le("watch_stop_to_gone_p95_ms", 2000)),
    Row("watch_burst50_reloads", "watch: networkd reloads for a 50-service compose up", "",
        "1-2", lambda r: None if r.get("watch_burst50_reloads") is None
        else 1 <= r["watch_burst50_reloads"] <= 2),
    Row("instant_watch_first_reply_p50_ms",
        "`docker run -d` -> first LAN reply, v6gen watch, p50", "ms", "<= 10, <= ndppd",
        _instant_ok),
    Row("instant_watch_first_reply_p95_ms", "  same, v6gen watch, p95", "ms"),
    Row("instant_ndppd_first_reply_answered",
        "  same, ndppd 0.2.5 `auto` rule: runs answered (of 20)", ""),
    Row("instant_ndppd_first_reply_p50_ms", "  same, ndppd 0.2.5 `auto` rule, p50", "ms"),
    Row("instant_ndppd_fresh_first_reply_p50_ms",
        "  same, ndppd started afresh before each run, p50", "ms"),
    Row("instant_ndppd_fresh_first_reply_p95_ms",
        "  same, ndppd started afresh before each run, p95", "ms"),
    Row("instant_none_replied", "  same, no proxy: runs answered within 3 s", ""),
    Row("instant_sid_watch_first_reply_p50_ms",
        "`docker run -d` -> first LAN reply, v6gen watch, dockerd 28.5 (sid), p50", "ms",
        "<= 10", _le("instant_sid_watch_first_reply_p50_ms", 10)),
    Row("instant_sid_watch_first_reply_p95_ms", "  same, p95", "ms", "<= 50",
        _le("instant_sid_watch_first_reply_p95_ms", 50)),
    Row("instant_sid_none_replied", "  same, no proxy: runs answered within 3 s", ""),
    Row("instant_watch_rm_to_gone_p50_ms", "`docker rm -f` -> entry gone, v6gen watch, p50", "ms"),
    Row("instant_watch_rm_to_gone_p95_ms", "  same, p95", "ms"),
    Row("claims_withdrawn_v6gen_max_ms",
        "watch: `docker run -d` on an address a LAN host holds -> withdrawn, max", "ms", "<= 2000",
        _le("claims_withdrawn_v6gen_max_ms", 2000)),
    Row("claims_withdrawn_v6gen_p50_ms", "  same, p50", "ms"),
    Row("claims_withdrawn_baseline_never", "  same, before issue 23 (df5f463): never withdrawn",
        ""),
    Row("claims_running_v6gen_max_ms",
        "container moved between two v6gen hosts: entry at the new and container running -> "
        "first LAN reply, max", "ms", "<= 200", _le("claims_running_v6gen_max_ms", 200)),
    Row("claims_running_v6gen_p50_ms", "  same, p50", "ms"),
    Row("claims_running_baseline_p50_ms", "  same, before issue 22 (df5f463), p50", "ms"),
    Row("claims_moved_v6gen_p50_ms",
        "  from the entry alone (dockerd 20.10 adds it ~0.6 s before the container runs), p50",
        "ms"),
    Row("podman_bookworm_first_reply_p50_ms",
        "`podman run -d` -> first LAN reply, watch, Podman 4.3.1 (bookworm), p50", "ms"),
    Row("podman_trixie_first_reply_p50_ms", "  same, Podman 5.4.2 (trixie), p50", "ms"),
    Row("podman_sid_first_reply_p50_ms", "  same, Podman 5.8.6 (sid), p50", "ms"),
    Row("podman_sid_rm_to_gone_p50_ms", "`podman rm -f` -> entry gone, Podman 5.8.6, p50", "ms"),
    Row("watch_rss_start_mib", "watch resident memory, started", "MiB"),
    Row("watch_rss_after_1000_events_mib",
        "  after 1,000 `network connect`/`disconnect` calls (1,500 events)", "MiB"),
    Row("ndppd_rss_mib", "  ndppd 0.2.5, for comparison", "MiB"),
    *(row for name, label in (("venv", "venv (PyPI libraries)"),
                              ("debian", "Debian's python3, as v6gen.service runs it"))
      for row in (
        Row(f"watch_memory_{name}_after_1000_events_mib",
            f"watch resident memory after 1,000 events, {label}", "MiB", "<= 35",
            _le(f"watch_memory_{name}_after_1000_events_mib", 35)),
        Row(f"watch_memory_baseline_{name}_after_1000_events_mib",
            "  same, before issue 22 (df5f463)", "MiB"),
    )),
    Row("watch_memory_debian_without_unit_env_after_1000_events_mib",
        "  Debian's python3 without the unit's SETUPTOOLS_USE_DISTUTILS=stdlib", "MiB"),
    *(row for docker, label in (("2010", "dockerd 20.10"), ("285", "dockerd 28.5 (sid)"))
      for row in (
        Row(f"first_network_v6gen_docker{docker}_p50_ms",
            f"first container on a new network -> first LAN reply, watch, {label}, p50", "ms"),
        Row(f"first_network_v6gen_docker{docker}_max_ms", "  same, slowest of 10", "ms"),
        Row(f"first_network_baseline_docker{docker}_p50_ms", "  same, before issue 22, p50", "ms"),
    )),
    Row("first_sync_v6gen_at_once",
        "first ping right after the first sync: answered at once, of 20",
        "", "20 of 20", lambda r: None if r.get("first_sync_v6gen_at_once") is None
        else r["first_sync_v6gen_at_once"] == r.get("first_sync_v6gen_runs")),
    Row("first_sync_baseline_at_once", "  same, before issue 22, of 5", ""),
    Row("watch_idle_cpu_ms_per_10s", "watch CPU time while idle, per 10 s", "ms", "0",
        lambda r: None if r.get("watch_idle_cpu_ms_per_10s") is None
        else r["watch_idle_cpu_ms_per_10s"] == 0),
    Row("prefix_gone_to_word_p50_ms",
        "watch: uplink's prefix gone -> which containers lost reach, p50", "ms"),
    Row("prefix_gone_to_word_p95_ms", "  same, p95", "ms"),
    Row("prefix_back_to_reply_p50_ms",
        "watch: prefix back -> first LAN reply, container started meanwhile, p50", "ms",
        "<= 2000", _le("prefix_back_to_reply_p50_ms", 2000)),
    Row("prefix_back_to_reply_p95_ms", "  same, p95", "ms", "<= 2000",
        _le("prefix_back_to_reply_p95_ms", 2000)),
    Row("prefix_back_to_reply_kept_p50_ms", "  same, entry kept by the grace rule, p50", "ms"),
    Row("translate_ra_to_reply_p50_ms",
        "translation: RA with a new prefix -> first LAN reply at the new address, p50", "ms",
        "<= 2000", _le("translate_ra_to_reply_p50_ms", 2000)),
    Row("translate_ra_to_reply_p95_ms", "  same, p95", "ms", "<= 2000",
        _le("translate_ra_to_reply_p95_ms", 2000)),
    Row("translate_ra_to_table_p50_ms", "  RA -> watch has moved the table and the entry, p50",
        "ms"),
    *(row for rel, name in (("bookworm", "Debian 12"), ("trixie", "Debian 13"), ("sid", "sid"))
      for row in (
        Row(f"boot_{rel}_running_s", f"booted {name}: nspawn start -> `running`", "s"),
        Row(f"reboot_{rel}_entry_s", "  `systemctl reboot` -> proxy entry back", "s"),
        Row(f"reboot_{rel}_lan_reply_s", "  `systemctl reboot` -> first LAN reply", "s"),
    )),
)  # fmt: skip


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3f}"
    return str(v)


def _status(ok: bool | None, target: str) -> str:
    if not target:
        return ""
    return {True: "met", False: "MISSED", None: "n/a"}[ok]


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for row in ROWS:
        value = _fmt(results.get(row.key))
        if row.unit and value != "n/a":
            value = f"{value} {row.unit}"
        ok = row.check(results) if row.check else None
        out.append((row.label, value, row.target, _status(ok, row.target)))
    return out


def print_table(results: dict[str, Any]) -> None:
    rows = [("metric", "value", "target", ""), *table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        print("  ".join(c.ljust(w) if j != 1 else c.rjust(w) for j, (c, w) in
                        enumerate(zip(r, widths, strict=True))).rstrip())  # fmt: skip
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("* replay of captured Docker API JSON (1,000 containers), real networkd 252 + kernel")
    for note in results.get("notes", []):
        print(f"- {note}")
    for name, err in results.get("errors", {}).items():
        print(f"! {name} failed: {err.strip().splitlines()[-1]}")


def write_section(results: dict[str, Any], path: Path) -> None:
    """The README's Performance section, generated from results.json."""
    m = results.get("machine", {})
    reruns = results.get("reruns", [])
    when = f"all rows in one run on {m.get('date', '?')[:10]}"
    if reruns:
        again = "; ".join(f"{', '.join(r['sections'])} on {r['date'][:16]}" for r in reruns)
        when = f"one run, with these sections measured again on their own: {again}"
    lines = [
        "## Performance",
        "",
        f"Measured by `make bench` (root; `python -m bench` with PYTHONPATH=src), {when}; "
        "method in bench/README.md, every sample in bench/results.json.",
        "",
        "| metric | value | target | |",
        "| --- | ---: | --- | --- |",
    ]
    for label, value, target, status in table_rows(results):
        lines.append(f"| {label.strip()} | {value} | {target} | {status} |")
    busy = [v.get("cpu_busy_during") for v in results.get("load", {}).values()]
    busy = [b for b in busy if b is not None]
    lines += [
        "",
        "Flap rows: v6gen's hook also runs in off/no-carrier, so the entry is usually back before "
        "the link is (the value is then the few ms the first check takes); 247.3-7+deb11u5 "
        "re-adds by itself too (the #18378 fix is backported), ~0.4 s after link up.",
        "",
        "\\* Docker for these rows is a replay of captured Docker Engine API JSON (1,000 "
        "containers on 10 networks, templated from bodies captured from the lab's dockerd) on a "
        "unix socket; networkd 252, the kernel and networkd-dispatcher are real.",
        "",
        f"Machine: {m.get('cpu_model')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB; "
        f"{m.get('os')}, kernel {m.get('kernel')}; Python {m.get('python')}; "
        f"{m.get('iproute2')}; {m.get('systemd_networkd_252')} and "
        f"{m.get('systemd_networkd_247')} (networkd); networkd-dispatcher "
        f"{m.get('networkd_dispatcher')}; docker.io {m.get('dockerd')}; ndppd {m.get('ndppd')}.",
        "",
        f"Commit {m.get('git_commit')}"
        + (
            f" plus uncommitted {', '.join(u.split()[-1] for u in m['git_uncommitted'])}"
            if m.get("git_uncommitted")
            else ""
        )
        + f"; sections {results.get('bench_seconds', 0):.0f} s in all"
        + (
            f", all CPUs {min(busy):.0%}-{max(busy):.0%} busy during the sections (other work "
            "included; see `load` in results.json)"
            if busy
            else ""
        )
        + ".",
        "",
        "Reproduce (root, Debian 12; installs the lab's packages and fetches networkd 247.3 from "
        "bullseye on first use):",
        "",
        "    make bench            # or: PYTHONPATH=src .venv/bin/python -m bench",
        "",
    ]
    path.write_text("\n".join(lines))


def _cpu_sample() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def _cpu_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over `seconds` (anything: other sessions count too)."""
    b0, t0 = _cpu_sample()
    time.sleep(seconds)
    b1, t1 = _cpu_sample()
    return (b1 - b0) / max(1, t1 - t0)


def _wait_quiet_machine(max_wait: float = 60) -> dict[str, float]:
    """Wait (bounded) until the machine is mostly idle, so other work skews less; report it."""
    t0 = time.monotonic()
    busy = _cpu_busy()
    while busy > 0.25 and time.monotonic() - t0 < max_wait:
        busy = _cpu_busy(2.0)
    return {
        "cpu_busy_before": round(busy, 2),
        "loadavg1_before": float(Path("/proc/loadavg").read_text().split()[0]),
        "waited_s": round(time.monotonic() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)}; merges "
                    "into an existing results.json")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces, networkd, dockerd)", file=sys.stderr)
        return 2
    names = SECTIONS if not args.only else tuple(n.strip() for n in args.only.split(","))
    unknown = set(names) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    from tests.lab import packages
    from tests.lab.image import build_rootfs_tar

    packages.ensure_packages((*packages.PACKAGES, "ndppd"))
    packages.networkd_247()
    build_rootfs_tar(packages.CACHE_DIR / "busybox-rootfs.tar")

    run_dir = CACHE / "last-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    results: dict[str, Any] = {}
    if args.only and args.out.exists():
        results = json.loads(args.out.read_text())
    results["machine"] = machine()
    # A full run replaces everything; a partial one says which rows it replaced, and when.
    reruns: list[dict[str, Any]] = results.get("reruns", []) if args.only else []
    if args.only:
        reruns.append({"sections": list(names), "date": results["machine"].get("date", "?")})
    results["reruns"] = reruns
    detail: dict[str, Any] = results.setdefault("detail", {})
    notes: dict[str, list[str]] = results.setdefault("section_notes", {})
    errors: dict[str, str] = {k: v for k, v in results.get("errors", {}).items()
                              if k not in names}  # fmt: skip
    load: dict[str, Any] = results.setdefault("load", {})
    t_all = time.monotonic()
    for name in names:
        log(f"--- {name}")
        load[name] = _wait_quiet_machine()
        t0 = time.monotonic()
        cpu0 = _cpu_sample()
        try:
            sec: Section = importlib.import_module(f"bench.{name}").run(run_dir)
        except Exception:
            errors[name] = traceback.format_exc()
            log(f"{name} FAILED:\n{errors[name]}")
            continue
        cpu1 = _cpu_sample()
        load[name]["seconds"] = round(time.monotonic() - t0, 1)
        # Everything, the bench's own work included: compare with an idle machine's run.
        load[name]["cpu_busy_during"] = round((cpu1[0] - cpu0[0]) / max(1, cpu1[1] - cpu0[1]), 2)
        load[name]["loadavg1_after"] = float(Path("/proc/loadavg").read_text().split()[0])
        results.update(sec.metrics)
        detail.update(sec.detail)
        notes[name] = sec.notes
    # A partial run adds its sections' time to the sections it kept.
    took = time.monotonic() - t_all
    if args.only:
        took = sum(v.get("seconds", 0) for v in load.values())
    results["bench_seconds"] = round(took, 1)
    results["errors"] = errors
    results["notes"] = [n for name in SECTIONS for n in notes.get(name, [])]
    results["targets"] = {
        row.key: {"target": row.target, "met": row.check(results) if row.check else None}
        for row in ROWS
        if row.target
    }
    # Flat metrics first, then the structured parts.
    structured = (
        "targets", "notes", "section_notes", "errors", "load", "reruns", "machine", "detail",
    )  # fmt: skip
    ordered = {k: v for k, v in results.items() if k not in structured}
    ordered.update({k: results[k] for k in structured if k in results})
    args.out.write_text(json.dumps(ordered, indent=2) + "\n")
    write_section(ordered, SECTION_FILE)
    print()
    print_table(ordered)
    log(f"wrote {args.out} and {SECTION_FILE} in {ordered['bench_seconds']:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
