"""The lab host: real systemd-networkd, networkd-dispatcher and dockerd in a private network +
mount namespace, with LAN neighbour namespaces on the far side of its uplinks.

Nothing is written outside the namespace: /run, /sys, the networkd, dispatcher, v6gen and
sysctl directories are fresh tmpfs, and /etc and /var/lib are overlays whose changes vanish
with the namespace. With LabOptions(dpkg=True), /usr, /var and the other directories dpkg and
apt-get write are overlays too, so packages can be installed and purged inside the lab.
Everything started is tracked by PID and killed in stop(), even after a failure half-way
through start().
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import networkd_bug, packages, podman
from .dockerapi import DockerAPI
from .image import IMAGE, build_rootfs_tar
from .nsproc import Command, LabError, Namespace, argv_of, run_checked
from .release import ChrootNamespace
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
# dpkg mode: every directory dpkg, apt-get and maintainer scripts write (/var covers the dpkg
# and apt state in /var/lib, apt's and debconf's caches in /var/cache, /var/log; / itself holds
# only these and symlinks into /usr on a merged-/usr system). /tmp stays the machine's: the
# test's workdir lives there.
DPKG_OVERLAY_DIRS = ("/etc", "/usr", "/var", "/opt", "/srv", "/root", "/home")
# dpkg mode: the package creates and purges these itself, which it could not do to a mount point
# (rmdir and rm -rf fail with EBUSY). /etc/v6gen and /var/lib/v6gen are removed inside the
# overlays instead, so the lab still starts without v6gen state; /usr/lib/networkd-dispatcher
# (whose <state>.d directories belong to networkd-dispatcher's package) is left as dpkg knows it.
DPKG_MANAGED_DIRS = ("/etc/v6gen", "/var/lib/v6gen", "/usr/lib/networkd-dispatcher")
# Kept the machine's in dpkg mode (bound back over the /var overlay): the lab's caches.
LAB_CACHE = str(packages.CACHE_DIR)
# The packaged command, run by lab.v6gen() when LabOptions.installed (or V6GEN_LAB_INSTALLED=1).
INSTALLED_V6GEN = "/usr/bin/v6gen"
INSTALLED_ENV = "V6GEN_LAB_INSTALLED"
# Units as maintainer scripts name them, for the lab's daemons (see SYSTEMCTL).
UNITS = {
    "dockerd": "docker.service",
    "dbus": "dbus.service",
    "networkd": "systemd-networkd.service",
    "dispatcher": "networkd-dispatcher.service",
}
UNIT_PIDS = "/run/lab/units"
# networkd 257's networkctl, bound over /usr/bin/networkctl inside the lab.
NETWORKCTL = "/run/lab/networkctl"

# dpkg mode's stand-in for systemctl (bound over /usr/bin/systemctl; /run/systemd/system exists
# so maintainer scripts believe systemd runs). The units are the lab's daemons, by the PIDs the
# lab keeps in /run/lab/units/<unit>. It answers what maintainer scripts ask (is-active,
# is-enabled, cat, daemon-reload; stop or try-restart of a unit that is not running;
# try-reload-or-restart of systemd-networkd, which is `networkctl reload` as its ExecReload=;
# start of networkd-dispatcher, as its unit would: Type=notify, so it returns once the daemon
# says it is ready, which its log shows), logs every call, and fails with "UNSUPPORTED" for
# anything it could only pretend to do. A dispatcher started this way is not in the lab's list of
# processes: stop() finds and kills it, by PID, with the rest of the namespace.
SYSTEMCTL = r"""#!/bin/sh
# lab systemctl: see tests/lab/labhost.py (SYSTEMCTL)
log=@LOG@
printf '%s
' "$*" >>"$log"
unsupported() {
    printf 'UNSUPPORTED %s
' "$*" >>"$log"
    echo "lab systemctl: unsupported: $*" >&2
    exit 1
}
quiet=no action= units=
for a in "$@"; do
    case $a in
    -q | --quiet) quiet=yes ;;
    --system | --no-block | --no-reload | --no-ask-password | --no-pager | --no-legend | --) ;;
    --version) echo "systemd 252 (lab systemctl stand-in)"; exit 0 ;;
    -*) unsupported "$@" ;;
    *)
        if [ -z "$action" ]; then action=$a
        else case $a in *.*) units="$units $a" ;; *) units="$units $a.service" ;; esac
        fi
        ;;
    esac
done
say() { [ "$quiet" = yes ] || echo "$@"; }
active() {
    pid=
    { read -r pid <"@UNITS@/$1"; } 2>/dev/null || return 1
    case $pid in '' | *[!0-9]*) return 1 ;; esac
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}
unit_file() {
    for d in /etc/systemd/system /run/systemd/system /lib/systemd/system; do
        [ -f "$d/$1" ] && { echo "$d/$1"; return 0; }
    done
    return 1
}
enabled() {
    active "$1" && return 0  # the lab started it: as good as enabled
    for w in /etc/systemd/system/*.wants/"$1"; do [ -e "$w" ] && return 0; done
    return 1
}
rc=0
case $action in
is-active)
    for u in $units; do
        if active "$u"; then say active; else say inactive; rc=3; fi
    done
    ;;
is-enabled)
    for u in $units; do
        if enabled "$u"; then say enabled
        elif unit_file "$u" >/dev/null; then say disabled; rc=1
        else echo "Failed to get unit file state for $u: No such file or directory" >&2; rc=1
        fi
    done
    ;;
cat)
    for u in $units; do
        f=$(unit_file "$u") || { echo "No files found for $u." >&2; rc=1; continue; }
        echo "# $f"; cat "$f"
    done
    ;;
daemon-reload | is-system-running)
    [ "$action" = daemon-reload ] || say running
    ;;
stop | try-restart | condrestart)
    for u in $units; do active "$u" && unsupported "$@"; done
    ;;
start)
    for u in $units; do
        active "$u" && continue
        [ "$u" = networkd-dispatcher.service ] || unsupported "$@"
        dlog=@LOGDIR@/dispatcher.log
        : >>"$dlog"
        seen=$(wc -c <"$dlog")
        networkd-dispatcher -v </dev/null >>"$dlog" 2>&1 &
        echo $! >"@UNITS@/$u"
        n=0
        until tail -c +"$((seen + 1))" "$dlog" | grep -q "Startup complete"; do
            n=$((n + 1))
            [ "$n" -le 150 ] && active "$u" || { echo "Job for $u failed" >&2; exit 1; }
            sleep 0.1
        done
    done
    ;;
reload | try-reload-or-restart | reload-or-restart | force-reload)
    for u in $units; do
        if [ "$u" = systemd-networkd.service ] && active "$u"; then
            networkctl reload || rc=1
        elif active "$u"; then
            unsupported "$@"
        elif [ "$action" = reload ] || [ "$action" = reload-or-restart ]; then
            echo "Job for $u failed: the lab does not start it" >&2; rc=1
        fi
    done
    ;;
*) unsupported "$@" ;;
esac
exit $rc
"""


# The chroot of a release (release.py) comes with its own fresh /run and an overlay over the
# whole tree; only the directories networkd needs at start are made here.
CHROOT_SCRIPT = """set -e
mkdir -p /run/dbus /run/systemd/network /run/systemd/netif/links /run/lab
mkdir -p /run/systemd/netif/leases /run/systemd/netif/lldp
chown -R systemd-network:systemd-network /run/systemd/netif
ip link set lo up
sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0
"""
# dockerd's flags besides its paths: everything else, the firewall included, as dockerd's
# defaults are. No default bridge (docker0 is IPv4 only and no test uses it), and no userland
# proxy processes for published ports (the kernel's NAT serves them).
DOCKERD_LAB_ARGS = ("--bridge=none", "--userland-proxy=false")


@dataclass(frozen=True)
class LabOptions:
    # "247": Debian bullseye's own 247.3 binary, which carries the #18378 fix (it re-adds proxy
    # entries after a flap); "247-bug": the same source rebuilt without that fix
    # (networkd_bug.py). None: no networkd (fixture capture).
    networkd: Literal["252", "247", "247-bug", "257", None] = "252"
    dispatcher: bool = True
    docker: bool = True
    uplinks: int = 1  # 2 adds uplink1 with its own LAN namespace
    ra_only: bool = False  # uplink0 configured by router advertisements from radvd
    # uplink1 too (with uplinks=2): a second NIC that takes its address from RAs, whose
    # router advertisements must keep working once v6gen has forwarding on.
    ra_uplink1: bool = False
    uplink0_network: tuple[str, ...] = ()  # more [Network] lines for uplink0's .network
    netplan: bool = False  # uplink0's .network lives at /run/systemd/network/10-netplan-*
    # dpkg and apt-get may install and purge packages inside: DPKG_OVERLAY_DIRS are overlays,
    # DPKG_MANAGED_DIRS are no mount points, and maintainer scripts see the lab's daemons as
    # systemd units (SYSTEMCTL). run_machine_net() is for apt-get's downloads.
    dpkg: bool = False
    # lab.v6gen() runs the installed /usr/bin/v6gen instead of src/ from this checkout. None:
    # only when the environment says V6GEN_LAB_INSTALLED=1 (debian/tests/lab under autopkgtest).
    installed: bool | None = None
    # The host side's Debian release. "bookworm": the machine's own filesystem, as always.
    # "trixie" and "sid": their cached root filesystem, chrooted (release.py), running that
    # release's own networkd (any networkd= but None means it), dispatcher, dbus, dockerd,
    # compose and python3.
    release: Literal["bookworm", "trixie", "sid"] = "bookworm"
    # More dockerd flags (the default: DOCKERD_LAB_ARGS; () runs dockerd as a user would).
    dockerd_args: tuple[str, ...] = DOCKERD_LAB_ARGS
    # "podman": the release's tree without Docker (bookworm's too), rootful Podman's API service
    # instead of dockerd (podman.py); docker= then means "the engine".
    # "podman6": Podman 6.1 and netavark 2.0 from experimental in a sid tree of their own, with
    # a cgroup2 tree mounted over the machine's hybrid one (release.py); sid only.
    engine: Literal["docker", "podman", "podman6"] = "docker"


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


def _mount_script(dpkg: bool = False) -> str:
    overlays = DPKG_OVERLAY_DIRS if dpkg else OVERLAY_DIRS
    tmpfs = [d for d in TMPFS_DIRS if not (dpkg and d in DPKG_MANAGED_DIRS)]
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
    keep_cache = dpkg and Path(LAB_CACHE).is_dir()
    if keep_cache:
        lines += ["mkdir -p /run/lab/cache", f"mount --bind {LAB_CACHE} /run/lab/cache"]
    for i, d in enumerate(overlays):
        if dpkg and not Path(d).is_dir():
            continue
        up, work = f"/run/lab/ov{i}/upper", f"/run/lab/ov{i}/work"
        lines += [
            f"mkdir -p {up} {work}",
            f"mount -t overlay -o lowerdir={d},upperdir={up},workdir={work} lab-ov {d}",
        ]
    if keep_cache:
        lines += [f"mount --move /run/lab/cache {LAB_CACHE}"]
    if dpkg:
        lines += [f"rm -rf {d}" for d in DPKG_MANAGED_DIRS if d.startswith(("/etc/", "/var/"))]
        lines += ["mkdir -p /run/lock"]  # /var/lock points there
        # Docker images ship a policy-rc.d that forbids every service action; maintainer scripts
        # are to meet the lab's systemctl (SYSTEMCTL) as on a booted machine.
        lines += ["rm -f /usr/sbin/policy-rc.d"]
    for d in tmpfs:
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


def cgroup_roots(parent: str) -> list[Path]:
    """Where dockerd's `--cgroup-parent` lands: one directory per v1 hierarchy (and cgroup2's
    under unified/) on a hybrid host, /sys/fs/cgroup/<parent> itself on a cgroup2-only one.
    Both are looked for: a sweep that only knew one layout would find nothing on the other."""
    base = Path("/sys/fs/cgroup")
    return [d for d in (base / parent, *base.glob(f"*/{parent}")) if d.is_dir()]


class Lab:
    def __init__(self, workdir: Path, options: LabOptions | None = None) -> None:
        self.options = options or LabOptions()
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.host: Namespace = Namespace(self.logdir, "host")
        if self.chrooted:
            self.host = ChrootNamespace(
                self.logdir, "host", self.options.release, workdir, self.options.engine
            )
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
        networkd_root = self._networkd_root()
        tarball = build_rootfs_tar(packages.CACHE_DIR / "busybox-rootfs.tar")
        self.host.start()
        self.run(CHROOT_SCRIPT if self.chrooted else _mount_script(dpkg=opts.dpkg))
        self._mark("namespace")
        if opts.docker and self.podman:
            podman.start_service(self)
        elif opts.docker:
            # Started first: it is the slowest to become ready and needs nothing else. Its
            # firewall settings are dockerd's defaults, as users run it (docker-firewall.md).
            dockerd = self.host.spawn("dockerd", [
                "dockerd", "--data-root=/var/lib/docker", "--exec-root=/run/docker",
                "-H", "unix:///run/docker.sock", "--pidfile=/run/docker.pid",
                f"--cgroup-parent={self.cgroup_parent}", "--log-level=warn",
                *opts.dockerd_args,
            ])  # fmt: skip
            self._unit_pid("dockerd", dockerd.pid)
        for uplink in self.uplinks:
            self._add_uplink(uplink)
        dbus = self.host.spawn("dbus", ["dbus-daemon", "--system", "--nofork", "--nopidfile"])
        self._unit_pid("dbus", dbus.pid)
        _wait("D-Bus", self.path("/run/dbus/system_bus_socket").exists, 10, self.logs)
        self._mark("uplinks+dbus")
        if opts.networkd is not None:
            self._start_networkd(networkd_root)
            self._mark("networkd")
            if opts.dispatcher:
                self.start_dispatcher()
                self._mark("dispatcher")
        if opts.docker:
            _wait(opts.engine, self.docker.ping, 30, self.logs)
            self._mark(opts.engine)
            if self.podman:
                podman.import_image(self, tarball, IMAGE)
            else:
                self.docker.import_image(tarball, IMAGE)
            self._mark("image")
        if opts.dpkg:
            # After dockerd's start: on a cgroup v2 machine, dockerd that sees /run/systemd/system
            # switches to the systemd cgroup driver, which needs a real systemd.
            self._fake_systemd()
            self._mark("systemctl")

    def _add_uplink(self, uplink: Uplink) -> None:
        lan = Namespace(self.logdir, f"lan-{uplink.name}", parent=self.host)
        lan.start()
        self.lans[uplink.name] = lan
        # From outside a release's PID namespace, where the LAN holder's PID is not visible.
        veth = f"ip link add {uplink.name} type veth peer name {uplink.lan_if} netns {lan.pid}"
        res = subprocess.run([*self.host.lan_prefix(), *veth.split()], capture_output=True)
        if res.returncode != 0:
            raise LabError(f"{veth}: {res.stderr.decode(errors='replace').strip()}")
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
        ra = (self.options.ra_only and uplink.name == "uplink0") or (
            self.options.ra_uplink1 and uplink.name == "uplink1"
        )
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
        extra = self.options.uplink0_network if uplink.name == "uplink0" else ()
        self.write(target, network_file(uplink, ra_only=ra, extra=extra))

    def _start_networkd(self, root: Path | None) -> None:
        if self.chrooted:
            proc = self.host.spawn("networkd", ["/usr/lib/systemd/systemd-networkd"])
        elif root is None:
            proc = self.host.spawn("networkd", ["/lib/systemd/systemd-networkd"])
        elif self.options.networkd == "257":
            # networkctl 257 too, as on a trixie host: v6gen reads the version from it.
            argv = packages.trixie_argv(root, "usr/bin/networkctl")
            self.write(NETWORKCTL, "#!/bin/sh\nexec " + " ".join(argv) + ' "$@"\n')
            self.path(NETWORKCTL).chmod(0o755)
            self.run(f"mount --bind {NETWORKCTL} /usr/bin/networkctl")
            proc = self.host.spawn(
                "networkd", packages.trixie_argv(root, "usr/lib/systemd/systemd-networkd")
            )
        else:
            proc = self.host.spawn(
                "networkd",
                [str(root / "lib/systemd/systemd-networkd")],
                env={"LD_LIBRARY_PATH": str(root / "lib/systemd")},
            )
        self._unit_pid("networkd", proc.pid)
        for uplink in self.uplinks:
            self.wait_configured(uplink.name, timeout=15)
        if self.options.ra_only:
            _wait("SLAAC default route", lambda: bool(self.default_routes()), 15, self.logs)
        if self.options.ra_uplink1:
            _wait("SLAAC on uplink1", lambda: self.has_slaac("uplink1"), 15, self.logs)

    def restart_networkd(self) -> None:
        """Stop networkd and start it again, the same version, as after a reboot or upgrade."""
        self.host.stop_proc("networkd")
        # The old daemon's link state files would pass the waits for "configured" at once,
        # before the new one has dropped and re-learnt the uplinks' SLAAC addresses and routes
        # (measured on 257 in trixie's chroot: gone for ~0.6 s right after the start).
        self.run("rm -f /run/systemd/netif/links/*")
        self._start_networkd(self._networkd_root())

    def _networkd_root(self) -> Path | None:
        """The extracted tree of a networkd other than the machine's own 252 (fetched once)."""
        if self.chrooted:
            if self.options.networkd not in ("252", None):
                raise LabError(f"release {self.options.release} runs its own networkd only")
            return None
        fetch = {
            "247": packages.networkd_247,
            "247-bug": networkd_bug.networkd_247_bug,
            "257": packages.networkd_257,
        }.get(self.options.networkd or "")
        return fetch() if fetch else None

    def has_slaac(self, ifname: str) -> bool:
        """Whether the link holds an address it configured itself from a router advertisement."""
        out = self.run(f"ip -6 addr show dev {ifname} scope global", check=False).stdout
        return "dynamic" in out

    def start_dispatcher(self) -> None:
        log = self.logdir / "dispatcher.log"
        start = log.stat().st_size if log.exists() else 0
        proc = self.host.spawn("dispatcher", ["networkd-dispatcher", "-v"])
        self._unit_pid("dispatcher", proc.pid)

        def ready() -> bool:
            return log.exists() and b"Startup complete" in log.read_bytes()[start:]

        _wait("networkd-dispatcher", ready, 15, self.logs)

    def stop_dispatcher(self) -> None:
        self.host.stop_proc("dispatcher")
        self._unit_pid("dispatcher", None)

    def _unit_pid(self, name: str, pid: int | None) -> None:
        """Record (or forget) the PID of a lab daemon under its unit name, for SYSTEMCTL."""
        f = self.path(f"{UNIT_PIDS}/{UNITS[name]}")
        if pid is None:
            f.unlink(missing_ok=True)
        else:
            self.write(f"{UNIT_PIDS}/{UNITS[name]}", f"{self.host.pid_inside(pid)}\n")

    def _fake_systemd(self) -> None:
        stub = "/run/lab/systemctl"
        text = SYSTEMCTL.replace("@LOG@", str(self.systemctl_log))
        self.write(stub, text.replace("@LOGDIR@", str(self.logdir)).replace("@UNITS@", UNIT_PIDS))
        self.path(stub).chmod(0o755)
        self.run(f"set -e; mkdir -p /run/systemd/system; mount --bind {stub} /usr/bin/systemctl")

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
        roots = cgroup_roots(self.cgroup_parent)
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
        """The engine's API: dockerd's, or Podman's Docker-compatible one."""
        if self.podman:
            return DockerAPI(self.path(podman.SOCKET))
        return DockerAPI(self.path("/run/docker.sock"))

    @property
    def chrooted(self) -> bool:
        """Whether the host side runs in a release's root filesystem (release.py): always for
        Podman, whose bookworm too is a tree of its own (rootfs.py)."""
        return self.options.release != "bookworm" or self.podman

    @property
    def podman(self) -> bool:
        return self.options.engine != "docker"

    @property
    def python(self) -> str:
        """The interpreter v6gen runs under from src/: the release's own, inside its chroot."""
        return "/usr/bin/python3" if self.chrooted else sys.executable

    @property
    def installed(self) -> bool:
        """Whether v6gen() runs the installed /usr/bin/v6gen rather than src/."""
        if self.options.installed is not None:
            return self.options.installed
        return os.environ.get(INSTALLED_ENV) == "1"

    def v6gen(
        self, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        # env -u: a DOCKER_HOST or bus address from the caller's environment would point
        # v6gen away from the lab's dockerd and bus.
        env = ["env", "-u", "DOCKER_HOST", "-u", "DBUS_SYSTEM_BUS_ADDRESS"]
        if self.installed:
            if not self.path(INSTALLED_V6GEN).exists():
                raise LabError(f"{INSTALLED_V6GEN} is not installed (in the lab)")
            # The package's own interpreter and modules; no byte code written under /usr.
            cmd = [
                *env, "-u", "PYTHONPATH", "-u", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE=1",
                INSTALLED_V6GEN, *args,
            ]  # fmt: skip
        else:
            cmd = [*env, f"PYTHONPATH={REPO / 'src'}", self.python, "-m", "v6gen", *args]
        return self.host.run(cmd, check=check, timeout=timeout)

    @property
    def systemctl_log(self) -> Path:
        """dpkg mode: every call maintainer scripts made to systemctl, one line each."""
        return self.logdir / "systemctl.log"

    def run_machine_net(
        self, cmd: Command, *, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """`cmd` in the lab's mount namespace (its overlays) but the machine's network
        namespace: apt-get fetching from the machine's mirror into the lab. Nothing run this
        way may change network state, which would be the machine's."""
        argv = ["nsenter", "-t", str(self.host.pid), "-m", "--", *argv_of(cmd)]
        return run_checked("machine net", argv, cmd, check=check, timeout=timeout)

    def overlay_changes(self) -> dict[str, str]:
        """What was written inside the overlays (not the tmpfs directories), as lab paths:
        "dir", "file", "symlink" or "deleted" (a whiteout: the machine's file hidden)."""
        if isinstance(self.host, ChrootNamespace):
            return self.host.overlay_changes()
        found: dict[str, str] = {}
        overlays = DPKG_OVERLAY_DIRS if self.options.dpkg else OVERLAY_DIRS
        for i, d in enumerate(overlays):
            upper = self.path(f"/run/lab/ov{i}/upper")
            if not upper.is_dir():
                continue
            for p in upper.rglob("*"):
                st = p.lstat()
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    kind = "deleted"
                elif p.is_symlink():
                    kind = "symlink"
                else:
                    kind = "dir" if p.is_dir() else "file"
                found[f"{d}/{p.relative_to(upper)}"] = kind
        return found

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
        """Down and up again, returning once the carrier is back. The kernel's linkwatch reports
        a veth's carrier up to a second after `ip link set up` (a fixed delay, not load), and
        the LAN can reach nothing until then: a window measured from the `up` would mostly
        measure that second."""
        self.run(
            f"ip link set {uplink} down && ip link set {uplink} up"
            f" && until ip -o link show {uplink} | grep -q 'state UP'; do sleep 0.02; done",
            timeout=10,
        )

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
        `within` whole seconds. One ping per second of the window: its echo waits in the
        neighbour's queue while solicitations repeat every 100 ms, and goes out with the first
        answer; a later one covers an echo whose reply was lost. Each ping's own -W bounds its
        wait, so the verdict does not count the process starts around it; `took` is only for
        reporting. (After a flap, start the window once the carrier is back: flap() waits.)"""
        if within != int(within):
            raise ValueError(f"lan_reachable: within={within} is not a whole number of seconds")
        t0 = time.monotonic()
        for _ in range(int(within)):
            if self.lan_ping(addr, uplink, wait=1):
                return time.monotonic() - t0
        return None

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
