"""A Debian release booted with systemd as PID 1 (`systemd-nspawn --boot`): the booted tier.

The machine runs no systemd, machined or udev, so (../../../shared/notes/lab-recipe.md):
- --register=no --keep-unit: nothing to register with; commands enter the container with
  nsenter on its PID 1 (machinectl and systemd-run -M cannot work);
- the uplink veth lives in a network namespace prepared here and passed by path, together with
  --private-network (without it the container has no CAP_NET_ADMIN, /proc/sys stays read-only,
  networkd is skipped and dockerd fails on iptables); --network-interface= would wait for udev;
- SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1: in the hybrid layout the v1 controllers are read-only and
  every `docker run` fails, and sid's systemd refuses it outright;
- runc needs the keyring system calls and bpf, which nspawn's filter refuses by default.

The cached root filesystem (rootfs.py) is only the lower layer of an overlay whose upper layer is
this boot's own directory, so boots are independent and a reboot finds what the last boot wrote.
Each launch runs in a private mount namespace (the overlay, a tmpfs over nspawn's propagation
directory), in cgroups of its own, since nspawn with --keep-unit puts its `payload` and `supervisor`
cgroups beside itself, and in a PID namespace whose init is nspawn: the booted system's PID 1
outlives nspawn's death (verified), but not the end of that namespace. Every launch gets a fresh
uplink namespace and veth, as a reboot gives fresh links; the LAN neighbour is another machine and
stays. dockerd keeps its data in the overlay too (overlay2 cannot stack on it, so it falls back to
vfs; the busybox image is 2 MB), which is what lets containers survive a reboot.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import time
from pathlib import Path

from . import rootfs
from .dockerapi import DockerAPI
from .image import IMAGE, build_rootfs_tar
from .labhost import BUSYBOX_PING, NEIGH_SOLICITS, poll
from .nsproc import (
    Command,
    LabError,
    Namespace,
    _die_with_parent,
    argv_of,
    ns_inode,
    run_checked,
)
from .packages import CACHE_DIR
from .topology import UPLINKS, network_file

UPLINK = UPLINKS[0]
# nspawn's exit status when the container asked for a reboot.
REBOOT_EXIT = 133
UNITS = "/usr/lib/systemd/system"
# Enabled in the overlay as an administrator would: networkd is not enabled by Debian's package.
# networkd-dispatcher is (its unit then waits for hooks); enabling it again changes nothing.
ENABLE = (
    ("multi-user.target.wants", "systemd-networkd.service"),
    ("sockets.target.wants", "systemd-networkd.socket"),
    ("multi-user.target.wants", "networkd-dispatcher.service"),
)
# What commands inside see: a login's environment, not pytest's.
INSIDE_ENV = (
    "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8", "HOME=/root", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=",
)  # fmt: skip
# busybox sh as PID 1 would ignore SIGTERM and hold up every shutdown by Docker's 10 s.
CONTAINER_COMMAND = ("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done")
DEB_INSIDE = "/root/v6gen.deb"
V1_NAMED = Path("/sys/fs/cgroup/systemd")  # the hybrid layout's name=systemd hierarchy
BOOT_TIMEOUT = 180.0


def _launch_script(lower: Path, workdir: Path, cgroup: str, netns: Path, machine: str) -> str:
    root, cg2, ns = workdir / "root", workdir / "cgroup2", workdir / "netns"
    lines = [
        "set -e",
        # The uplink's namespace by a path that stays valid once /proc is this PID namespace's.
        f"touch {ns}",
        f"mount --bind {netns} {ns}",
        # nspawn reads its child's /proc entries by the PIDs it sees, as PID 1 here.
        "mount -t proc boot-proc /proc",
        # nspawn keeps per-machine state there; the tmpfs keeps it off the machine's /run.
        "mkdir -p /run/systemd/nspawn",
        "mount -t tmpfs -o mode=755 boot-nspawn /run/systemd/nspawn",
        f"mkdir -p {root} {cg2}",
        f"mount -t overlay -o lowerdir={lower},upperdir={workdir}/upper,workdir={workdir}/work"
        f" boot-root {root}",
        f"mount -t cgroup2 boot-cg2 {cg2}",
        f"mkdir -p {cg2}/{cgroup}",
        f"echo $$ > {cg2}/{cgroup}/cgroup.procs",
    ]
    if V1_NAMED.is_dir():
        lines += [f"mkdir -p {V1_NAMED}/{cgroup}", f"echo $$ > {V1_NAMED}/{cgroup}/cgroup.procs"]
    lines += [
        f"umount {cg2}",
        "export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1",
        f"exec systemd-nspawn --boot -D {root} --machine={machine} --register=no --keep-unit"
        " --link-journal=no --resolv-conf=off --timezone=off --console=read-only"
        f" --private-network --network-namespace-path={ns}"
        " --system-call-filter='add_key keyctl request_key bpf'",
    ]
    return "\n".join(lines)


def _children(pid: int) -> list[int]:
    try:
        return [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _remove_cgroup_tree(top: Path) -> None:
    """rmdir children before parents; a cgroup whose last process just died may be busy a
    moment longer."""
    if not top.is_dir():
        return
    dirs = sorted((d for d in (top, *top.rglob("*")) if d.is_dir()), key=lambda d: -len(d.parts))
    for d in dirs:
        poll(functools.partial(_rmdir, d), 5, interval=0.02)


def _rmdir(d: Path) -> bool:
    try:
        d.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


class BootedSystem:
    """`suite`'s root filesystem booted under systemd-nspawn, with a LAN neighbour on its uplink.

    `start()` boots and waits for `systemctl is-system-running`; `reboot()` has systemd reboot
    and launches again on the same overlay; `stop()` (also on any failure) kills nspawn, which
    takes the container's PID namespace with it, and removes namespaces and cgroups.
    """

    def __init__(self, workdir: Path, suite: str) -> None:
        self.suite = suite
        self.workdir = workdir
        self.lower = rootfs.path(suite)
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.lan = Namespace(self.logdir, "lan-uplink0")
        self.uplink_ns: Namespace | None = None
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        self.launches = 0
        self.cgroups: list[str] = []
        self.boot_seconds: list[float] = []  # launch to `running`/`degraded`, per boot
        self.state = ""  # what is-system-running said when the boot was done
        self._t_launch = 0.0

    # ----- life cycle ---------------------------------------------------------------------------
    def start(self) -> BootedSystem:
        try:
            rootfs.build(self.suite)
            self._prepare()
            self.lan.start()
            self._launch()
            self.wait_booted()
            self.docker.import_image(build_rootfs_tar(CACHE_DIR / "busybox-rootfs.tar"), IMAGE)
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self) -> None:
        """The overlay's upper layer before the first boot: the uplink's .network and the units
        an administrator of such a host enables."""
        upper = self.workdir / "upper"
        (self.workdir / "work").mkdir(parents=True, exist_ok=True)
        net = upper / "etc/systemd/network" / UPLINK.network_file
        net.parent.mkdir(parents=True, exist_ok=True)
        net.write_text(network_file(UPLINK, ra_only=False))
        for wants, unit in ENABLE:
            link = upper / "etc/systemd/system" / wants / unit
            link.parent.mkdir(parents=True, exist_ok=True)
            if not (self.lower / "etc/systemd/system" / wants / unit).is_symlink():
                link.symlink_to(f"{UNITS}/{unit}")

    def _launch(self, carrier: bool = True) -> None:
        self.launches += 1
        n = self.launches
        self.uplink_ns = Namespace(self.logdir, f"uplink-boot{n}")
        self.uplink_ns.start()
        self._add_uplink(self.uplink_ns, carrier)
        cgroup = f"v6gen-boot-{os.getpid()}-{id(self):x}-{n}"
        self.cgroups.append(cgroup)
        machine = f"v6gen-{self.suite}-{os.getpid()}-{n}"
        script = _launch_script(
            self.lower, self.workdir, cgroup, Path(f"/proc/{self.uplink_ns.pid}/ns/net"), machine
        )
        console = (self.logdir / f"console-boot{n}.log").open("ab")
        self._t_launch = time.monotonic()
        # nspawn runs as PID 1 of a PID namespace of its own, which unshare ends with SIGKILL
        # when it dies (also when pytest is killed: _die_with_parent): that takes the booted
        # system with it, whose PID 1 would outlive nspawn's own death. unshare exits with
        # nspawn's status.
        self.nspawn = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
             "--kill-child", "--", "sh", "-c", script],
            preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL, stdout=console,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        console.close()
        if not poll(self._find_pid1, 30, interval=0.02):
            raise LabError(f"{self.suite}: no container PID 1 after 30 s\n{self.console()}")

    def _find_pid1(self) -> bool:
        """The booted system's PID 1: nspawn's child in a PID namespace other than nspawn's."""
        assert self.nspawn is not None
        if self.nspawn.poll() is not None:
            raise LabError(f"nspawn exited with {self.nspawn.returncode}\n{self.console()}")
        for nspawn in _children(self.nspawn.pid):
            outer = ns_inode(nspawn, "pid")
            for kid in _children(nspawn):
                if ns_inode(kid, "pid") not in (outer, None):
                    self.pid1 = kid
                    return True
        return False

    def _add_uplink(self, ns: Namespace, carrier: bool) -> None:
        """The uplink veth, its LAN end in the neighbour's namespace, configured as labhost's.
        Without `carrier` the LAN end stays down, so the uplink has none (set_carrier())."""
        ns.run(
            f"ip link add {UPLINK.name} type veth peer name {UPLINK.lan_if} netns {self.lan.pid}"
        )
        self.lan.run(
            f"set -e; ip link set lo up; sysctl -qw net.ipv6.conf.{UPLINK.lan_if}.accept_dad=0;"
            f" ip addr add {UPLINK.lan_addr}/64 dev {UPLINK.lan_if} nodad;"
            f" sysctl -qw net.ipv6.neigh.{UPLINK.lan_if}.retrans_time_ms=100"
            f" net.ipv6.neigh.{UPLINK.lan_if}.mcast_solicit={NEIGH_SOLICITS}"
        )
        self.set_carrier(carrier)

    def set_carrier(self, up: bool) -> None:
        """The uplink's carrier, as a cable or switch port gives it: the LAN end up or down."""
        self.lan.run(f"ip link set {UPLINK.lan_if} {'up' if up else 'down'}")

    def wait_booted(self, timeout: float = BOOT_TIMEOUT) -> str:
        """Polls `systemctl is-system-running` until the boot is done: "running", or "degraded"
        (failed_units() says which)."""

        def done() -> bool:
            assert self.nspawn is not None
            if self.nspawn.poll() is not None:
                raise LabError(f"nspawn exited with {self.nspawn.returncode}\n{self.console()}")
            res = self.run(["systemctl", "is-system-running"], check=False, timeout=30)
            self.state = res.stdout.strip()
            return self.state in ("running", "degraded")

        if not poll(done, timeout, interval=0.1):
            raise LabError(f"{self.suite}: not booted after {timeout}s ({self.state!r})")
        self.boot_seconds.append(time.monotonic() - self._t_launch)
        return self.state

    def reboot(self, *, carrier: bool = True, timeout: float = BOOT_TIMEOUT) -> float:
        """`systemctl reboot` inside, nspawn's exit 133, then a launch on the same overlay with
        fresh links (the uplink without carrier unless `carrier`). Returns the seconds from the
        reboot command to nspawn's exit."""
        assert self.nspawn is not None
        t0 = time.monotonic()
        self.run(["systemctl", "reboot"], check=False)
        try:
            code = self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{self.suite}: still up {timeout}s after reboot") from exc
        down = time.monotonic() - t0
        if code != REBOOT_EXIT:
            raise LabError(f"nspawn exited with {code}, not {REBOOT_EXIT}\n{self.console()}")
        self._drop_boot()
        self._launch(carrier)
        return down

    def _drop_boot(self) -> None:
        """What one launch leaves: its uplink namespace (the veth goes with it, a moment later)
        and its cgroups."""
        if self.uplink_ns is not None:
            self.uplink_ns.stop()
            self.uplink_ns = None
        gone = poll(lambda: self.lan.run(f"ip link show {UPLINK.lan_if}", check=False).returncode
                    != 0, 30)  # fmt: skip
        if not gone:
            raise LabError("the old uplink veth is still there 30 s after its namespace went")
        for cgroup in self.cgroups:
            self._remove_cgroups(cgroup)
        self.cgroups.clear()

    def _remove_cgroups(self, cgroup: str) -> None:
        _remove_cgroup_tree(V1_NAMED / cgroup)
        # The cgroup2 tree is not mounted on a hybrid machine: mount it privately to clean up.
        cg2 = self.workdir / "cgroup2"
        cg2.mkdir(exist_ok=True)
        subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             f"mount -t cgroup2 boot-cg2 {cg2} && if [ -d {cg2}/{cgroup} ]; then"
             f" find {cg2}/{cgroup} -depth -type d -exec rmdir {{}} + ; fi"],
            capture_output=True, check=False,
        )  # fmt: skip

    def stop(self) -> None:
        if self.nspawn is not None and self.nspawn.poll() is None:
            # SIGKILL, not a shutdown: the overlay is thrown away, and a clean shutdown would
            # wait for containers that ignore SIGTERM. nspawn is the init of the PID namespace
            # that holds the booted system's, so everything goes with it; unshare then reaps it
            # and exits (killed itself only if it does not).
            for nspawn in _children(self.nspawn.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(nspawn, signal.SIGKILL)
            try:
                self.nspawn.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait()
        # Still the booted system's init (a reused PID would be in our PID namespace): kill it.
        if (
            self.pid1
            and not poll(lambda: ns_inode(self.pid1, "pid") is None, 10)
            and ns_inode(self.pid1, "pid") not in (ns_inode(os.getpid(), "pid"), None)
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGKILL)
        self._drop_boot_quietly()
        self.lan.stop()

    def _drop_boot_quietly(self) -> None:
        with contextlib.suppress(LabError):
            if self.lan.holder is not None:
                self._drop_boot()
                return
        if self.uplink_ns is not None:
            self.uplink_ns.stop()
        for cgroup in self.cgroups:
            self._remove_cgroups(cgroup)

    def __enter__(self) -> BootedSystem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- helpers for tests --------------------------------------------------------------------
    def run(
        self, cmd: Command, *, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`cmd` inside, in every namespace of the container's PID 1 (its root included)."""
        argv = ["nsenter", "-t", str(self.pid1), "-a", "--", *INSIDE_ENV, *argv_of(cmd)]
        return run_checked(self.suite, argv, cmd, check=check, timeout=timeout, input=input)

    def seconds_since_launch(self) -> float:
        """Since nspawn was started for the current boot."""
        return time.monotonic() - self._t_launch

    def path(self, inside: str) -> Path:
        return Path(f"/proc/{self.pid1}/root") / inside.lstrip("/")

    @property
    def docker(self) -> DockerAPI:
        # docker.socket: the first connection starts dockerd if it is not running yet.
        return DockerAPI(self.path("/run/docker.sock"))

    def docker_cli(self, *args: str) -> str:
        return self.run(["docker", *args]).stdout.strip()

    def create_network(self, name: str, subnet: str, routed: bool) -> None:
        """An IPv6 bridge network; `routed`: Docker's `routed` IPv6 gateway mode, without which
        Docker 28 drops what the LAN sends a container (../../README.md)."""
        opts = ["-o", "com.docker.network.bridge.gateway_mode_ipv6=routed"] if routed else []
        self.docker_cli("network", "create", "--ipv6", "--subnet", subnet, *opts, name)

    def start_container(self, name: str, network: str, addr: str, *opts: str) -> None:
        self.docker_cli("run", "-d", "--name", name, "--network", network, "--ip6", addr, *opts,
                        IMAGE, *CONTAINER_COMMAND)  # fmt: skip

    def install_deb(self, deb: Path) -> str:
        """`apt-get install ./v6gen.deb` inside (every Depends is in the root filesystem, so
        apt needs no network); its output, maintainer scripts' included."""
        self.path(DEB_INSIDE).write_bytes(deb.read_bytes())
        res = self.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", DEB_INSIDE],
                       timeout=300)  # fmt: skip
        return res.stdout + res.stderr

    def failed_units(self) -> list[str]:
        out = self.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend"]).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def is_active(self, unit: str) -> str:
        return self.run(["systemctl", "is-active", unit], check=False).stdout.strip()

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
        pairs = (line.partition("=") for line in out.splitlines() if "=" in line)
        return {k: v for k, _, v in pairs}

    def journal(self, *args: str) -> str:
        return self.run(["journalctl", "--no-pager", "-o", "short-monotonic", *args]).stdout

    def proxy_entries(self) -> set[str]:
        out = self.run(["ip", "-6", "neigh", "show", "proxy", "dev", UPLINK.name]).stdout
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    def lan_ping(self, addr: str, wait: int = 1) -> bool:
        """One echo from the LAN neighbour, its cache entry for `addr` dropped first so that the
        answer depends on NDP now (as labhost's)."""
        self.lan.run(f"ip -6 neigh flush to {addr} dev {UPLINK.lan_if}", check=False)
        res = self.lan.run(f"{BUSYBOX_PING} -6 -c 1 -W {wait} {addr}", check=False,
                           timeout=wait + 5)  # fmt: skip
        return res.returncode == 0

    def lan_reachable(self, addr: str, within: int) -> float | None:
        """Seconds until the neighbour first got a reply, or None: one ping a second, each
        bounded by ping's own -W (see labhost.Lab.lan_reachable)."""
        t0 = time.monotonic()
        for _ in range(within):
            if self.lan_ping(addr):
                return time.monotonic() - t0
        return None

    def console(self, tail: int = 40) -> str:
        parts = []
        for log in sorted(self.logdir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {log.name} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(parts)
