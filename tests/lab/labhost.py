"""The lab host: real systemd-networkd, networkd-dispatcher and dockerd in a private network +
mount namespace, with LAN neighbour namespaces on the far side of its uplinks.

Nothing is written outside the namespace: /run, /sys, the networkd, dispatcher, v6gen and
sysctl directories are fresh tmpfs, and /etc and /var/lib are overlays whose changes vanish
with the namespace. Everything started is tracked by PID and killed in stop(), even after a
failure half-way through start().
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import packages
from .dockerapi import DockerAPI
from .image import IMAGE, build_rootfs_tar
from .nsproc import Command, LabError, Namespace
from .topology import UPLINKS, Uplink, network_file, radvd_conf

REPO = Path(__file__).resolve().parents[2]
BUSYBOX_PING = "/bin/busybox ping"
# 100 ms apart: solicitations keep coming for 5 s, longer than any wait in the tests.
NEIGH_SOLICITS = 50

# Where the lab (or v6gen, or the packages) write, each made a fresh empty tmpfs.
TMPFS_DIRS = (
    "/etc/systemd/network",
    "/etc/systemd/networkd.conf.d",
    "/etc/networkd-dispatcher",
    "/usr/lib/networkd-dispatcher",
    "/etc/v6gen",
    "/var/lib/v6gen",
    "/etc/sysctl.d",
    "/var/lib/docker",
)
# Catch-alls for anything else written there; mount points for the tmpfs above that don't exist
# on the machine are created inside these overlays, not on it.
OVERLAY_DIRS = ("/etc", "/var/lib")


@dataclass(frozen=True)
class LabOptions:
    networkd: Literal["252", "247", None] = "252"  # None: no networkd (fixture capture)
    dispatcher: bool = True
    docker: bool = True
    uplinks: int = 1  # 2 adds uplink1 with its own LAN namespace
    ra_only: bool = False  # uplink0 configured by router advertisements from radvd
    netplan: bool = False  # uplink0's .network lives at /run/systemd/network/10-netplan-*


def _wait(what: str, ready: Callable[[], bool], timeout: float, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}\n{logs()}")
        time.sleep(0.02)


def poll(cond: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """True as soon as cond() holds, False if it still doesn't after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _mount_script() -> str:
    lines = [
        "set -e",
        "mount -t tmpfs -o mode=755 lab-run /run",
        "mkdir -p /run/lab/cgroup",
        # A fresh read-only sysfs makes networkd treat links as initialized without udev; the
        # cgroup tree under it is bound back for dockerd.
        "mount --rbind /sys/fs/cgroup /run/lab/cgroup",
        "mount -t sysfs -o ro sysfs /sys",
        "mount --rbind /run/lab/cgroup /sys/fs/cgroup",
        "umount -l /run/lab/cgroup",
    ]
    for i, d in enumerate(OVERLAY_DIRS):
        up, work = f"/run/lab/ov{i}/upper", f"/run/lab/ov{i}/work"
        lines += [
            f"mkdir -p {up} {work}",
            f"mount -t overlay -o lowerdir={d},upperdir={up},workdir={work} lab-ov {d}",
        ]
    for d in TMPFS_DIRS:
        lines += [f"mkdir -p {d}", f"mount -t tmpfs -o mode=755 lab {d}"]
    lines += [
        "mkdir -p /run/dbus /run/systemd/network /run/systemd/netif/links",
        "mkdir -p /run/systemd/netif/leases /run/systemd/netif/lldp",
        "chown -R systemd-network:systemd-network /run/systemd/netif",
        "ip link set lo up",
        # Without this, each new docker bridge's gateway address stays tentative for ~1-2 s and
        # the first pings after `compose up` fail for reasons that have nothing to do with v6gen.
        "sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0",
    ]
    return "\n".join(lines)


class Lab:
    def __init__(self, workdir: Path, options: LabOptions | None = None) -> None:
        self.options = options or LabOptions()
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.host = Namespace(self.logdir, "host")
        self.lans: dict[str, Namespace] = {}
        self.uplinks: tuple[Uplink, ...] = UPLINKS[: self.options.uplinks]
        self.bringup_seconds = 0.0
        self.timings: dict[str, float] = {}
        self._t_last = 0.0

    # ----- life cycle -------------------------------------------------------------------------
    def start(self) -> Lab:
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.bringup_seconds = time.monotonic() - t0
        return self

    def _mark(self, phase: str) -> None:
        now = time.monotonic()
        self.timings[phase] = round(now - self._t_last, 3)
        self._t_last = now

    def _start(self) -> None:
        self._t_last = time.monotonic()
        opts = self.options
        networkd_root = packages.networkd_247() if opts.networkd == "247" else None
        tarball = build_rootfs_tar(packages.CACHE_DIR / "busybox-rootfs.tar")
        self.host.start()
        self.run(_mount_script())
        self._mark("namespace")
        if opts.docker:
            # Started first: it is the slowest to become ready and needs nothing else.
            self.host.spawn("dockerd", [
                "dockerd", "--data-root=/var/lib/docker", "--exec-root=/run/docker",
                "-H", "unix:///run/docker.sock", "--pidfile=/run/docker.pid",
                "--iptables=false", "--ip6tables=false", "--bridge=none",
                "--userland-proxy=false", f"--cgroup-parent={self.cgroup_parent}",
                "--log-level=warn",
            ])  # fmt: skip
        for uplink in self.uplinks:
            self._add_uplink(uplink)
        self.host.spawn("dbus", ["dbus-daemon", "--system", "--nofork", "--nopidfile"])
        _wait("D-Bus", self.path("/run/dbus/system_bus_socket").exists, 10, self.logs)
        self._mark("uplinks+dbus")
        if opts.networkd is not None:
            self._start_networkd(networkd_root)
            self._mark("networkd")
            if opts.dispatcher:
                self.start_dispatcher()
                self._mark("dispatcher")
        if opts.docker:
            _wait("dockerd", self.docker.ping, 30, self.logs)
            self._mark("dockerd")
            self.docker.import_image(tarball, IMAGE)
            self._mark("image")

    def _add_uplink(self, uplink: Uplink) -> None:
        lan = Namespace(self.logdir, f"lan-{uplink.name}", parent=self.host)
        lan.start()
        self.lans[uplink.name] = lan
        self.run(f"ip link add {uplink.name} type veth peer name {uplink.lan_if} netns {lan.pid}")
        # DAD off before the link comes up, so link-local addresses are usable at once.
        self.run(f"sysctl -qw net.ipv6.conf.{uplink.name}.accept_dad=0")
        lan.run(
            f"set -e; ip link set lo up; sysctl -qw net.ipv6.conf.{uplink.lan_if}.accept_dad=0;"
            f" ip addr add {uplink.lan_addr}/64 dev {uplink.lan_if} nodad;"
            f" ip link set {uplink.lan_if} up"
        )
        # The neighbour re-solicits every 100 ms (kernel default: 1 s, 3 tries), so a ping that
        # starts before the proxy answers still succeeds as soon as it does: reachability is
        # then timed to ~0.1 s instead of in whole seconds.
        lan.run(
            f"sysctl -qw net.ipv6.neigh.{uplink.lan_if}.retrans_time_ms=100"
            f" net.ipv6.neigh.{uplink.lan_if}.mcast_solicit={NEIGH_SOLICITS}"
        )
        ra = self.options.ra_only and uplink.name == "uplink0"
        if ra:
            # radvd refuses to advertise unless the neighbour itself forwards.
            lan.run("sysctl -qw net.ipv6.conf.all.forwarding=1")
            conf = self.workdir / f"radvd-{uplink.name}.conf"
            conf.write_text(radvd_conf(uplink))
            lan.spawn(f"radvd-{uplink.name}", [
                "radvd", "-n", "-m", "stderr", "-C", str(conf),
                "-p", f"/run/lab/radvd-{uplink.name}.pid",
            ])  # fmt: skip
        if self.options.netplan and uplink.name == "uplink0":
            target = f"/run/systemd/network/{uplink.netplan_file}"
        else:
            target = f"/etc/systemd/network/{uplink.network_file}"
        self.write(target, network_file(uplink, ra_only=ra))

    def _start_networkd(self, root: Path | None) -> None:
        if root is None:
            self.host.spawn("networkd", ["/lib/systemd/systemd-networkd"])
        else:
            self.host.spawn(
                "networkd",
                [str(root / "lib/systemd/systemd-networkd")],
                env={"LD_LIBRARY_PATH": str(root / "lib/systemd")},
            )
        for uplink in self.uplinks:
            self.wait_configured(uplink.name, timeout=15)
        if self.options.ra_only:
            _wait("SLAAC default route", lambda: bool(self.default_routes()), 15, self.logs)

    def start_dispatcher(self) -> None:
        log = self.logdir / "dispatcher.log"
        start = log.stat().st_size if log.exists() else 0
        self.host.spawn("dispatcher", ["networkd-dispatcher", "-v"])

        def ready() -> bool:
            return log.exists() and b"Startup complete" in log.read_bytes()[start:]

        _wait("networkd-dispatcher", ready, 15, self.logs)

    def stop_dispatcher(self) -> None:
        self.host.stop_proc("dispatcher")

    def stop(self) -> None:
        if self.host.holder is not None and self.options.docker:
            # Force-remove containers first: `sleep` as PID 1 ignores SIGTERM, and dockerd
            # would otherwise wait 10 s per container on shutdown.
            try:
                if self.docker.ping():
                    self.docker.remove_all_containers()
            except (OSError, RuntimeError):
                pass
        for lan in self.lans.values():
            lan.stop()
        self.lans.clear()
        self.host.stop()
        self._sweep_cgroups()

    @property
    def cgroup_parent(self) -> str:
        return f"v6gen-lab-{os.getpid()}-{id(self):x}"

    def _sweep_cgroups(self) -> None:
        """Kill container processes dockerd left behind, then drop the lab's cgroups."""
        roots = Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}")
        dirs = [d for root in roots for d in (root, *root.rglob("*")) if d.is_dir()]
        dirs.sort(key=lambda d: len(d.parts), reverse=True)  # children before parents
        for d in dirs:
            procs = d / "cgroup.procs"
            for pid in procs.read_text().split() if procs.exists() else []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        for d in dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)

    # ----- helpers for tests ------------------------------------------------------------------
    def path(self, inside: str) -> Path:
        """A path as the lab host sees it, reachable from outside through /proc/<pid>/root."""
        return Path(f"/proc/{self.host.pid}/root") / inside.lstrip("/")

    def write(self, inside: str, text: str) -> None:
        p = self.path(inside)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def read(self, inside: str) -> str:
        return self.path(inside).read_text()

    def run(
        self, cmd: Command, *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.host.run(cmd, check=check, timeout=timeout)

    def lan(self, uplink: str = "uplink0") -> Namespace:
        return self.lans[uplink]

    @property
    def docker(self) -> DockerAPI:
        return DockerAPI(self.path("/run/docker.sock"))

    def v6gen(
        self, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        # env -u: a DOCKER_HOST or bus address from the caller's environment would point
        # v6gen away from the lab's dockerd and bus.
        cmd = [
            "env", "-u", "DOCKER_HOST", "-u", "DBUS_SYSTEM_BUS_ADDRESS",
            f"PYTHONPATH={REPO / 'src'}", sys.executable, "-m", "v6gen", *args,
        ]  # fmt: skip
        return self.host.run(cmd, check=check, timeout=timeout)

    def compose(self, file: Path, *args: str, project: str = "lab") -> str:
        res = self.run(
            [
                "env",
                "-u",
                "DOCKER_HOST",
                "docker-compose",
                "-f",
                str(file.resolve()),
                "-p",
                project,
                *args,
            ],
            timeout=120,
        )
        return res.stdout + res.stderr

    def compose_up(self, file: Path, project: str = "lab") -> str:
        return self.compose(file, "up", "-d", project=project)

    def compose_down(self, file: Path, project: str = "lab") -> str:
        # -t 0: busybox sleep as PID 1 ignores SIGTERM; waiting for it proves nothing.
        return self.compose(file, "down", "-t", "0", project=project)

    def flap(self, uplink: str = "uplink0") -> None:
        self.run(f"ip link set {uplink} down && ip link set {uplink} up")

    def sysctl(self, key: str) -> str:
        # Not via path(): /proc/sys/net answers for the reader's network namespace, not the lab's.
        return self.run(["sysctl", "-n", key]).stdout.strip()

    def proxy_entries(self, uplink: str = "uplink0") -> set[str]:
        out = self.run(f"ip -6 neigh show proxy dev {uplink}").stdout
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    def default_routes(self) -> list[str]:
        return self.run("ip -6 route show default").stdout.splitlines()

    def lan_ping(self, addr: str, uplink: str = "uplink0", wait: int = 1) -> bool:
        """One echo from the LAN neighbour, answered within `wait` whole seconds (busybox ping
        takes no fractions). The neighbour's cache entry is dropped first, so the answer
        depends on NDP (the proxy) now, not on what the neighbour learnt earlier."""
        lan = self.lan(uplink)
        lan.run(f"ip -6 neigh flush to {addr} dev {Uplink.lan_if}", check=False)
        res = lan.run(f"{BUSYBOX_PING} -6 -c 1 -W {wait} {addr}", check=False, timeout=wait + 5)
        return res.returncode == 0

    def lan_reachable(self, addr: str, within: float, uplink: str = "uplink0") -> float | None:
        """Seconds until the neighbour first got a reply from `addr`, or None if not within
        `within`. One ping covers the whole window: its echo waits in the neighbour's queue
        while solicitations repeat every 100 ms, and goes out with the first answer."""
        t0 = time.monotonic()
        ok = self.lan_ping(addr, uplink, wait=math.ceil(within))
        took = time.monotonic() - t0
        return took if ok and took <= within + 0.1 else None

    def link_state(self, ifname: str) -> dict[str, str]:
        """networkd's state file for a link (same format in 247 and 252)."""
        index = self.path(f"/sys/class/net/{ifname}/ifindex").read_text().strip()
        state = self.path(f"/run/systemd/netif/links/{index}")
        if not state.exists():
            return {}
        pairs = (ln.partition("=") for ln in state.read_text().splitlines() if "=" in ln)
        return {k: v for k, _, v in pairs}

    def wait_configured(self, ifname: str, timeout: float = 10) -> None:
        _wait(
            f"{ifname} configured by networkd",
            lambda: self.link_state(ifname).get("ADMIN_STATE") == "configured",
            timeout,
            self.logs,
        )

    def networkctl_reload(self) -> None:
        self.run("networkctl reload")

    def logs(self, tail: int = 30) -> str:
        parts = []
        for log in sorted(self.logdir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {log.name} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(parts)

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
