"""flap_restore_p50_ms / _p95_ms: networkd 247.3 (Debian bullseye's 247.3-7+deb11u5) in the lab,
one proxied address set up by `v6gen sync`, uplink down/up 20 times; from `ip link set up`
to the entry back in the kernel (rtnetlink dump every 1 ms: the kernel sends no notification for
proxy entries, so `ip monitor neigh` cannot see them).

Phases in the same lab, 20 flaps for the two headline rows, 10 for the others:
- v6gen: the dispatcher hooks `v6gen sync` installed (off, no-carrier, carrier, degraded,
  routable, configured) AND networkd's own re-add (the deb11u5 build turned out to carry the
  #18378 fix): whichever comes first.
- networkd alone: networkd-dispatcher stopped, so only networkd re-adds.
- hook alone: the address taken out of networkd's configuration (IPv6ProxyNDPAddress= lines
  dropped from v6gen's drop-in, reload), so only the hook re-adds: what a 247.3 without the
  backport would see.
Flap kinds: "held" (down until networkd has seen it and the dispatcher has run its hooks, then
up), "quick" (down && up back to back) and "carrier" (the LAN end of the veth goes down/up: a
cable pull; uplink0 stays admin-up). Before each flap the lab settles (link configured,
dispatcher log quiet for 0.3 s).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from .common import ProxyTable, Section, ifindex, log, nsenter, pct, rnd, summary, timed_run
from .labutil import (
    PROBE,
    SEED,
    hooks_installed,
    install_hooks_by_hand,
    ip,
    start_lab,
    sync_json,
    wait_quiet,
)

FLAPS = 20
DROPIN = "/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf"


def _flaps(
    lab: Any, table: ProxyTable, idx: int, n: int, mode: str
) -> tuple[list[float], int, int, int]:
    """n flaps; returns (ms from link up to entry present, missed, present already at up,
    times networkd 247.3 failed the link and needed `networkctl reconfigure`).

    mode "held": `ip link set uplink0 down`, held until networkd saw it and the dispatcher
    went quiet (its off/no-carrier hooks have run), then `ip link set uplink0 up`.
    mode "quick": `ip link set uplink0 down && ip link set uplink0 up` in one shell, as
    tests/lab's flap(); timed from before that shell starts.
    mode "carrier": the LAN neighbour's end of the veth goes down and up (a cable pull: uplink0
    stays admin-up and loses carrier), held like "held".
    """
    took: list[float] = []
    missed = present_at_up = failed = 0
    dispatcher_log = lab.logdir / "dispatcher.log"
    host = nsenter(lab.host.pid, mount=False)
    lan = lab.lan().prefix()
    if mode == "carrier":
        down_cmd = [*lan, "ip", "link", "set", "eth0", "down"]
        up_cmd = [*lan, "ip", "link", "set", "eth0", "up"]
    elif mode == "quick":
        down_cmd = []
        up_cmd = [*host, "sh", "-c", "ip link set uplink0 down && ip link set uplink0 up"]
    else:
        down_cmd = [*host, "ip", "link", "set", "uplink0", "down"]
        up_cmd = [*host, "ip", "link", "set", "uplink0", "up"]
    for _ in range(n):
        failed += _settle(lab)
        wait_quiet(dispatcher_log, quiet=0.3, timeout=5)
        if not table.has(idx, PROBE):
            raise RuntimeError("entry missing before the flap")
        if down_cmd:
            subprocess.run(down_cmd, check=True, timeout=10)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                if lab.link_state("uplink0").get("OPER_STATE") in ("off", "no-carrier"):
                    break
                time.sleep(0.01)
            wait_quiet(dispatcher_log, quiet=0.3, timeout=5)
        t0 = time.perf_counter()
        timed_run(up_cmd, bound=10)
        first = table.has(idx, PROBE)
        t1 = (
            time.perf_counter()
            if first
            else table.wait(lambda e: (idx, PROBE) in e, timeout=10, interval=0.001)
        )
        if first and down_cmd:
            present_at_up += 1
        if t1 is None:
            missed += 1
            # Put it back so the next flap starts from the same state.
            ip(lab, "-6", "neigh", "replace", "proxy", PROBE, "dev", "uplink0")
        else:
            took.append((t1 - t0) * 1000)
    failed += _settle(lab)
    return took, missed, present_at_up, failed


def _settle(lab: Any) -> int:
    """Wait until networkd has uplink0 configured; 1 if it had failed it on the way (247.3 does
    after a quick down/up: "Could not set route: No route to host") and needed a reconfigure."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        state = lab.link_state("uplink0").get("ADMIN_STATE")
        if state == "configured":
            return 0
        if state == "failed":
            lab.run("networkctl reconfigure uplink0")
            lab.wait_configured("uplink0", timeout=15)
            return 1
        time.sleep(0.01)
    lab.wait_configured("uplink0", timeout=0)  # raises with the logs
    return 0


EXTRA_FLAPS = 10
PHASES = (
    # (phase, mode, key in results, flaps)
    ("v6gen", "held", "flap_restore", FLAPS),
    ("v6gen", "quick", "flap_restore_quick", EXTRA_FLAPS),
    ("v6gen", "carrier", "flap_restore_carrier", EXTRA_FLAPS),
    ("networkd_only", "held", "flap_restore_networkd_only", FLAPS),
    ("hook_only", "quick", "flap_restore_hook_only_quick", EXTRA_FLAPS),
)


def run(workdir: Path) -> Section:
    sec = Section()
    lab = start_lab(workdir / "flap", networkd="247")
    results: dict[str, tuple[list[float], int, int, int]] = {}
    try:
        lab.compose_up(SEED)
        report, _ = sync_json(lab)
        assert PROBE in lab.proxy_entries(), report
        # The sync's reload makes networkd reconfigure uplink0 a moment later, while its state
        # file still says "configured": a flap in that window makes 247.3 fail the link.
        time.sleep(1.0)
        installed = hooks_installed(lab)
        sec.detail["flap_hooks_installed_by_sync"] = installed
        if not installed:
            install_hooks_by_hand(lab)
            sec.notes.append(
                "flap: `v6gen sync` installed no dispatcher hook; the bench copied "
                "dispatcher-hooks/50-v6gen into /etc/networkd-dispatcher/<state>.d/ "
                "(0755 root:root) itself"
            )
            lab.stop_dispatcher()
            lab.start_dispatcher()
        idx = ifindex(lab.host.pid, "uplink0")
        phase_now = "v6gen"
        with ProxyTable(lab.host.pid) as table:
            for phase, mode, key, n in PHASES:
                if phase != phase_now:
                    _enter_phase(lab, phase)
                    phase_now = phase
                results[key] = _flaps(lab, table, idx, n, mode)
                log(f"flap {phase}/{mode}: {_fmt(results[key])}")
        sec.detail["flap_hook_log_lines"] = _hook_lines(lab)
    finally:
        lab.stop()

    for _phase, _mode, key, _n in PHASES:
        took, missed, at_up, failed = results[key]
        sec.metrics[f"{key}_p50_ms"] = rnd(pct(took, 50), 1) if took else None
        sec.metrics[f"{key}_p95_ms"] = rnd(pct(took, 95), 1) if took else None
        sec.detail[f"{key}_ms"] = {
            **summary(took, 1),
            "missed": missed,
            "present_at_up": at_up,
            "networkd_failed_link": failed,
        }
    sec.notes.append(
        "flap: networkd 247.3-7+deb11u5 + networkd-dispatcher 2.2.3 + the hooks `v6gen sync` "
        f"installed, {FLAPS} flaps (extra rows {EXTRA_FLAPS}); `ip link set up` -> entry seen "
        "over rtnetlink (1 ms polling; an entry already there when `ip` returns counts as the "
        "~2-4 ms that check takes); held = down until networkd and the dispatcher are done "
        "with it; quick = down && up back to back; carrier = LAN end of the veth down/up"
    )
    return sec


def _enter_phase(lab: Any, phase: str) -> None:
    if phase == "networkd_only":
        lab.stop_dispatcher()
    elif phase == "hook_only":
        # networkd forgets the address (it never deletes the kernel entry itself); only the
        # hook re-adds from here on.
        text = lab.read(DROPIN)
        lab.write(DROPIN, re.sub(r"(?m)^(?:IPv6ProxyNDPAddress|ProxyNeighbor)=.*\n", "", text))
        lab.networkctl_reload()
        time.sleep(0.5)
        lab.wait_configured("uplink0", timeout=15)
        ip(lab, "-6", "neigh", "replace", "proxy", PROBE, "dev", "uplink0")
        lab.start_dispatcher()


def _hook_lines(lab: Any) -> int:
    log_path = lab.logdir / "dispatcher.log"
    return log_path.read_text(errors="replace").count("v6gen-hook:") if log_path.exists() else 0


def _fmt(res: tuple[list[float], int, int, int]) -> str:
    took, missed, at_up, failed = res
    if not took:
        return f"none restored ({missed} missed)"
    return (
        f"p50 {pct(took, 50):.1f} ms p95 {pct(took, 95):.1f} ms, {missed} missed, "
        f"{at_up} already present at up, networkd failed the link {failed}x"
    )
