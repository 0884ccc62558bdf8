"""boot_<release>_running_s, reboot_<release>_entry_s, reboot_<release>_lan_reply_s: the booted
tier (tests/lab/boot.py: systemd as PID 1 under systemd-nspawn), one run per release.

Per release: boot the cached root filesystem; `docker run --restart unless-stopped` a container
on an IPv6 network (`routed` on sid); `apt-get install ./v6gen.deb`; `systemctl enable --now
v6gen`; then `systemctl reboot` inside, and nspawn is launched again on the same overlay with a
fresh uplink (boot.py's reboot()).

- boot -> running: nspawn started to `systemctl is-system-running` saying running (polled every
  0.1 s through nsenter, so up to ~0.1 s late); systemd's own "Startup finished" (userspace) in
  detail.
- reboot -> entry: the `systemctl reboot` command to the container's proxy entry in the new
  uplink namespace (rtnetlink dump every ~20 ms, ProxyTable).
- reboot -> first LAN reply: the same start to the first echo reply the LAN neighbour gets
  (lanping.Pinger: a fresh echo from a raw socket every 20 ms while none is answered).
- Where the time goes (detail and notes): each unit's ActiveEnterTimestampMonotonic (systemd's
  CLOCK_MONOTONIC, the host's: nspawn is no VM) after nspawn's relaunch, for networkd, containerd,
  dockerd and v6gen (active = READY=1, after its first sync), and the container's StartedAt
  (wall clock, converted), beside the entry and the reply.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from tests.lab import packages
from tests.lab.boot import BootedSystem
from tests.lab.debpkg import build_deb
from tests.lab.lanping import Pinger

from .common import ProxyTable, Section, log, rnd

RELEASES = ("bookworm", "trixie", "sid")
ROUTED = frozenset({"sid"})
NET, SUBNET = "bench-net", "2001:db8::b:0/120"
KEEPER = IPv6Address("2001:db8::b:10")
UNITS = ("systemd-networkd", "containerd", "docker", "v6gen")
PING_EVERY = 0.02
BOUND = 120.0


def run(run_dir: Path) -> Section:
    packages.ensure_packages(("systemd-container",))
    deb = build_deb()
    sec = Section()
    for release in RELEASES:
        _one(release, run_dir / f"boot-{release}", deb.path, sec)
    return sec


def _one(release: str, workdir: Path, deb: Path, sec: Section) -> None:
    with BootedSystem(workdir, release) as system:
        running = system.boot_seconds[0]
        analyze = system.run(["systemd-analyze"], check=False).stdout
        userspace = re.search(r"Startup finished in (\S+?)(ms|s) \(userspace\)", analyze)
        system.create_network(NET, SUBNET, routed=release in ROUTED)
        system.start_container("keeper", NET, str(KEEPER), "--restart", "unless-stopped")
        system.install_deb(deb)
        system.run(["systemctl", "enable", "--now", "v6gen.service"], timeout=180)
        if system.lan_reachable(str(KEEPER), within=30) is None:
            raise RuntimeError(f"{release}: the LAN does not reach {KEEPER} before the reboot")

        t0 = time.monotonic()
        shutdown = system.reboot()
        launched = time.monotonic() - system.seconds_since_launch()
        wall_launched = time.time() - system.seconds_since_launch()
        entry_at, reply_at = _watch(system, t0)
        system.wait_booted()
        units = {u: _active_at(system, u) - launched for u in UNITS}
        started = system.docker_cli("inspect", "-f", "{{.State.StartedAt}}", "keeper")
        container = _rfc3339(started) - wall_launched

    m: dict[str, Any] = {
        f"boot_{release}_running_s": rnd(running, 2),
        f"reboot_{release}_entry_s": rnd(entry_at - t0, 2),
        f"reboot_{release}_lan_reply_s": rnd(reply_at - t0, 2),
    }
    sec.metrics.update(m)
    after_launch = {
        **{f"{u}_active": rnd(t, 2) for u, t in units.items()},
        "container_started": rnd(container, 2),
        "entry": rnd(entry_at - launched, 2),
        "lan_reply": rnd(reply_at - launched, 2),
    }
    sec.detail[f"boot_{release}"] = {
        "userspace_s": _seconds(userspace),
        "reboot_shutdown_s": rnd(shutdown, 2),
        "reboot_relaunch_s": rnd(launched - t0, 2),
        "after_relaunch_s": after_launch,
    }
    sec.notes.append(
        f"{release} reboot: shutdown {shutdown:.2f} s, then after nspawn's relaunch networkd "
        f"+{units['systemd-networkd']:.2f} s (entry +{entry_at - launched:.2f} s, from v6gen's "
        f"drop-in), dockerd +{units['docker']:.2f} s, container started +{container:.2f} s, "
        f"v6gen ready +{units['v6gen']:.2f} s, first LAN reply +{reply_at - launched:.2f} s"
    )
    log(f"{release}: {m} {sec.detail[f'boot_{release}']}")


def _watch(system: BootedSystem, t0: float) -> tuple[float, float]:
    """When the entry appeared and when the LAN got its first reply (monotonic seconds)."""
    assert system.uplink_ns is not None
    entry_at = reply_at = 0.0
    with ProxyTable(system.uplink_ns.pid) as table, Pinger(system.lan.pid) as pinger:
        while not (entry_at and reply_at):
            if time.monotonic() - t0 > BOUND:
                raise RuntimeError(f"{system.suite}: entry/reply not back {BOUND} s after reboot")
            if not entry_at and any(IPv6Address(a) == KEEPER for _, a in table.entries()):
                entry_at = time.monotonic()
            if not reply_at:
                if pinger.first_reply(str(KEEPER), PING_EVERY) is not None:
                    reply_at = time.monotonic()
            else:
                time.sleep(PING_EVERY)
    return entry_at, reply_at


def _active_at(system: BootedSystem, unit: str) -> float:
    usec = system.show(unit, "ActiveEnterTimestampMonotonic")["ActiveEnterTimestampMonotonic"]
    return int(usec) / 1e6


def _rfc3339(stamp: str) -> float:
    """Docker's StartedAt (nanoseconds, "Z") as a POSIX timestamp; microseconds are enough."""
    m = re.fullmatch(r"(.+?)(\.\d{1,6})?\d*Z", stamp.strip())
    if m is None:
        raise RuntimeError(f"unexpected StartedAt {stamp!r}")
    return dt.datetime.fromisoformat(m.group(1) + (m.group(2) or "") + "+00:00").timestamp()


def _seconds(found: re.Match[str] | None) -> float | None:
    if found is None:
        return None
    value = float(found.group(1))
    return rnd(value / 1000 if found.group(2) == "ms" else value, 3)
