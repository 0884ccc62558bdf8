"""watch_start_to_proxied_p50/p95_ms, watch_stop_to_gone_*, watch_burst50_reloads.

Lab: networkd 252, networkd-dispatcher, real dockerd. `v6gen watch` runs in the lab (started the
way Lab.v6gen runs the CLI; its stderr in <logdir>/watch.log). Containers are created up front
on an IPv6 bridge network inside the uplink's /64 and started/stopped through the Docker Engine
API (what `docker start`/`docker stop -t 0` send).

- start -> proxied: from the return of POST /containers/<id>/start (dockerd has emitted the
  start event by then) to the container's proxy entry seen in the kernel (rtnetlink dump every
  1 ms). 20 trials, one fresh container each; between trials watch and the dispatcher settle.
- stop -> gone: from the return of POST /containers/<id>/stop?t=0 to the entry gone.
- burst: one `docker-compose up -d` of 50 services (compose file format 2.4, one IPv6 network);
  networkd reloads = "reloaded systemd-networkd" lines watch logged from the start of `up` until
  all 50 entries are in the kernel and watch has been quiet for 2 s. The same for `down`.
"""

from __future__ import annotations

import json
import sys
import time
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from tests.lab.image import IMAGE
from tests.lab.labhost import REPO

from .common import ProxyTable, Section, ifindex, log, pct, rnd, summary
from .labutil import py_env, start_lab, wait_quiet

TRIALS = 20
BURST = 50
NET = "benchw"
SUBNET = "2001:db8::e:0/120"
BURST_SUBNET = "2001:db8::f:0/120"
RELOADED = "reloaded systemd-networkd"


def _addr(subnet: str, i: int) -> str:
    return str(IPv6Address(int(IPv6Address(subnet.split("/")[0])) + 0x10 + i))


def _compose_file(path: Path) -> None:
    lines = ['version: "2.4"', "services:"]
    for i in range(BURST):
        lines += [
            f"  s{i:02d}:",
            f"    image: {IMAGE}",
            '    command: ["sleep", "infinity"]',
            "    networks:",
            "      burst:",
            f"        ipv6_address: {_addr(BURST_SUBNET, i)}",
        ]
    lines += [
        "networks:",
        "  burst:",
        "    enable_ipv6: true",
        "    ipam:",
        "      config:",
        f"        - subnet: {BURST_SUBNET}",
        "",
    ]
    path.write_text("\n".join(lines))


def _create(lab: Any, name: str, addr: str) -> str:
    body = {
        "Image": IMAGE,
        "Cmd": ["sleep", "infinity"],
        "HostConfig": {"NetworkMode": NET},
        "NetworkingConfig": {"EndpointsConfig": {NET: {"IPAMConfig": {"IPv6Address": addr}}}},
    }
    out = json.loads(lab.docker.call("POST", f"/containers/create?name={name}", body))
    return str(out["Id"])


def _reloads(watch_log: Path) -> int:
    return watch_log.read_text(errors="replace").count(RELOADED)


def _bus_reloads(lab: Any) -> int:
    """Reload() calls to networkd seen on the lab's system bus by dbus-monitor: the ground
    truth, independent of what watch logs (`networkctl reload` calls the same method)."""
    path = lab.logdir / "dbus-monitor.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return sum(
        1
        for line in text.splitlines()
        if line.startswith("method call")
        and "member=Reload" in line
        and "interface=org.freedesktop.network1.Manager" in line
    )


def _settle(lab: Any, watch_log: Path) -> None:
    wait_quiet(watch_log, quiet=0.3, timeout=10)
    wait_quiet(lab.logdir / "dispatcher.log", quiet=0.2, timeout=10)


def run(workdir: Path) -> Section:
    sec = Section()
    lab = start_lab(workdir / "watch")
    watch_log = lab.logdir / "watch.log"
    start_ms: list[float] = []
    start_ms_from_request: list[float] = []
    stop_ms: list[float] = []
    burst: dict[str, Any] = {}
    try:
        lab.docker.call("POST", "/networks/create", {
            "Name": NET, "EnableIPv6": True, "CheckDuplicate": True,
            "IPAM": {"Config": [{"Subnet": SUBNET}]},
        })  # fmt: skip
        ids = [_create(lab, f"w{i:02d}", _addr(SUBNET, i)) for i in range(TRIALS + 1)]
        lab.host.spawn("dbus-monitor", [
            "dbus-monitor", "--system",
            "type='method_call',interface='org.freedesktop.network1.Manager',member='Reload'",
        ])  # fmt: skip
        lab.host.spawn("watch", [
            *py_env("NOTIFY_SOCKET"), f"PYTHONPATH={REPO / 'src'}", sys.executable,
            "-m", "v6gen", "watch",
        ])  # fmt: skip
        deadline = time.monotonic() + 20
        while "v6gen: watching the events of " not in (
            watch_log.read_text(errors="replace") if watch_log.exists() else ""
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"v6gen watch did not start\n{lab.logs()}")
            time.sleep(0.05)
        idx = ifindex(lab.host.pid, "uplink0")
        with ProxyTable(lab.host.pid) as table:

            def present(addr: str) -> Any:
                return lambda e: (idx, addr) in e

            def gone(addr: str) -> Any:
                return lambda e: (idx, addr) not in e

            for i, cid in enumerate(ids):
                addr = _addr(SUBNET, i)
                _settle(lab, watch_log)
                t_req = time.perf_counter()
                lab.docker.call("POST", f"/containers/{cid}/start")
                t0 = time.perf_counter()
                t1 = table.wait(present(addr), timeout=15)
                if t1 is None:
                    raise RuntimeError(f"{addr} never proxied after start\n{lab.logs()}")
                _settle(lab, watch_log)
                t_stop = time.perf_counter()
                lab.docker.call("POST", f"/containers/{cid}/stop?t=0")
                t2 = time.perf_counter()
                t3 = table.wait(gone(addr), timeout=15)
                if t3 is None:
                    raise RuntimeError(f"{addr} still proxied after stop\n{lab.logs()}")
                if i == 0:
                    continue  # warm-up: the first start also pays watch's first imports
                start_ms.append((t1 - t0) * 1000)
                start_ms_from_request.append((t1 - t_req) * 1000)
                stop_ms.append((t3 - t2) * 1000)
                burst.setdefault("stop_request_ms", []).append((t2 - t_stop) * 1000)
            log(
                f"watch: start->proxied p50 {pct(start_ms, 50):.0f} ms p95 "
                f"{pct(start_ms, 95):.0f} ms; stop->gone p50 {pct(stop_ms, 50):.0f} ms"
            )

            compose = workdir / "watch" / "burst50.yml"
            _compose_file(compose)
            _settle(lab, watch_log)
            addrs = [_addr(BURST_SUBNET, i) for i in range(BURST)]
            before, bus_before = _reloads(watch_log), _bus_reloads(lab)
            t0 = time.perf_counter()
            lab.compose_up(compose, project="burst")
            t_up = time.perf_counter()
            t_all = table.wait(lambda e: all((idx, a) in e for a in addrs), timeout=60)
            wait_quiet(watch_log, quiet=2.0, timeout=60)
            burst["up_reloads"] = _reloads(watch_log) - before
            burst["up_reloads_dbus"] = _bus_reloads(lab) - bus_before
            burst["compose_up_s"] = t_up - t0
            burst["up_all_proxied_after_compose_start_s"] = None if t_all is None else t_all - t0
            burst["up_all_proxied_after_compose_return_s"] = None if t_all is None else t_all - t_up

            before, bus_before = _reloads(watch_log), _bus_reloads(lab)
            t0 = time.perf_counter()
            lab.compose_down(compose, project="burst")
            t_down = time.perf_counter()
            t_none = table.wait(lambda e: not any((idx, a) in e for a in addrs), timeout=60)
            wait_quiet(watch_log, quiet=2.0, timeout=60)
            burst["down_reloads"] = _reloads(watch_log) - before
            burst["down_reloads_dbus"] = _bus_reloads(lab) - bus_before
            burst["compose_down_s"] = t_down - t0
            burst["down_all_gone_after_compose_return_s"] = (
                None if t_none is None else t_none - t_down
            )
            log(f"watch burst of {BURST}: {burst['up_reloads']} reloads on up "
                f"({burst['up_reloads_dbus']} Reload calls on the bus), "
                f"{burst['down_reloads']} on down")  # fmt: skip
        text = watch_log.read_text(errors="replace")
        burst["watch_log_lines"] = len(text.splitlines())
        burst["watch_errors"] = [ln for ln in text.splitlines() if "error" in ln.lower()][:5]
    finally:
        lab.stop()

    sec.metrics.update(
        watch_start_to_proxied_p50_ms=rnd(pct(start_ms, 50), 1),
        watch_start_to_proxied_p95_ms=rnd(pct(start_ms, 95), 1),
        watch_stop_to_gone_p50_ms=rnd(pct(stop_ms, 50), 1),
        watch_stop_to_gone_p95_ms=rnd(pct(stop_ms, 95), 1),
        watch_burst50_reloads=burst["up_reloads"],
        watch_burst50_reloads_dbus=burst["up_reloads_dbus"],
        watch_burst50_down_reloads=burst["down_reloads"],
        watch_burst50_compose_up_s=rnd(burst["compose_up_s"], 2),
    )
    sec.detail.update(
        watch_start_to_proxied_ms=summary(start_ms, 1),
        watch_start_request_to_proxied_ms=summary(start_ms_from_request, 1),
        watch_stop_to_gone_ms=summary(stop_ms, 1),
        watch_stop_request_ms=summary(burst.pop("stop_request_ms", []), 1),
        watch_burst50={k: (rnd(v, 3) if isinstance(v, float) else v) for k, v in burst.items()},
    )
    sec.notes.append(
        f"watch: real dockerd 20.10 in the lab, {TRIALS} start/stop trials via the Engine API "
        f"(after one warm-up), timed from the API call's return to the entry seen over "
        f"rtnetlink; burst = one `docker-compose up -d` of {BURST} services, reloads counted "
        f"from watch's log lines and, independently, networkd Reload() calls on the bus"
    )
    return sec
