"""The lab host on another Debian release: a cached root filesystem (rootfs.py), chrooted inside
private network, mount and PID namespaces.

The cached tree is only ever the lower layer of an overlay whose upper layer is a tmpfs of this
lab, so nothing a lab writes (v6gen's files, dpkg's database, logs, caches) persists into it, and
labs on the same release can run side by side. The overlay also makes / a mount point, which
dockerd needs: `docker import` remounts / and fails with EINVAL otherwise. The checkout is bound
read-only at its own path, so v6gen runs from src/ under the release's python3 and Debian's
libraries, compose files are found where tests name them, and no byte code of another Python
lands in the checkout.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from . import rootfs
from .nsproc import LabError, Namespace, _die_with_parent, ns_inode

RELEASES = ("bookworm", "trixie", "sid")
REPO = Path(__file__).resolve().parents[2]
# Inside the chroot: fresh per lab, as a booted system has them (/var/lib/docker also because
# overlay2, dockerd's storage driver, cannot stack on the overlay root).
CHROOT_TMPFS = (("/run", "755"), ("/tmp", "1777"), ("/var/lib/docker", "755"))
# Podman's storage, for the same reason (its overlay driver too); only its trees have the dir.
PODMAN_TMPFS = (("/var/lib/containers", "755"),)


def _setup_script(
    lower: Path, workdir: Path, more_tmpfs: tuple[tuple[str, str], ...] = (), cgroup2: bool = False
) -> str:
    """Run by the new namespaces' first process, before it becomes the chroot's init."""
    rw, root = workdir / "rootfs-rw", workdir / "rootfs"
    lines = [
        "set -e",
        # LAN neighbours run the machine's tools outside the chroot (radvd writes a pid file
        # under /run/lab): their /run too is the lab's own.
        "mount -t tmpfs -o mode=755 lab-run /run",
        "mkdir -p /run/lab",
        f"mkdir -p {rw} {root}",
        f"mount -t tmpfs -o mode=755 lab-rw {rw}",
        f"mkdir -p {rw}/upper {rw}/work",
        f"mount -t overlay -o lowerdir={lower},upperdir={rw}/upper,workdir={rw}/work"
        f" lab-root {root}",
        # Mounted by a process of the new PID namespace: its /proc shows only the lab's processes.
        f"mount -t proc proc {root}/proc",
        f"mount --rbind /dev {root}/dev",
        # Read-only: networkd treats links as initialized without udev (a writable sysfs leaves
        # them "pending" forever). The cgroup tree is bound back for dockerd and runc.
        f"mount -t sysfs -o ro sysfs {root}/sys",
        # Podman 6 refuses the machine's hybrid layout ("Cgroups v1 not supported"): it gets the
        # unified hierarchy alone (the machine's /sys/fs/cgroup/unified), where it runs.
        f"mount -t cgroup2 cgroup2 {root}/sys/fs/cgroup"
        if cgroup2
        else f"mount --rbind /sys/fs/cgroup {root}/sys/fs/cgroup",
    ]
    lines += [f"mount -t tmpfs -o mode={m} lab {root}{d}" for d, m in (*CHROOT_TMPFS, *more_tmpfs)]
    lines += [f"mkdir -p {root}{REPO}", f"mount --bind -o ro {REPO} {root}{REPO}"]
    # At its own path too, so that what runs inside (the lab's systemctl stand-in, and the
    # dispatcher it starts) logs where the lab reads logs from.
    logdir = workdir / "logs"
    lines += [f"mkdir -p {root}{logdir}", f"mount --bind {logdir} {root}{logdir}"]
    # tini reaps whatever the daemons orphan; `sleep` keeps the namespaces alive.
    lines += [f"exec chroot {root} /usr/bin/tini -s -- sleep infinity"]
    return "\n".join(lines)


class ChrootNamespace(Namespace):
    """A host namespace whose processes run chrooted in `suite`'s root filesystem.

    `pid` is the chroot's init (tini, PID 1 inside), as seen from the machine; commands enter
    with `nsenter -n -m -p -r -w`, which also takes the target's root and working directory.
    """

    def __init__(
        self, logdir: Path, name: str, suite: str, workdir: Path, engine: str = "docker"
    ) -> None:
        super().__init__(logdir, name)
        self.suite = suite
        self.workdir = workdir
        self.engine = engine  # rootfs.ENGINES: the tree with dockerd, or with Podman instead
        self.init_pid = 0

    @property
    def pid(self) -> int:
        if self.holder is None or not self.init_pid:
            raise LabError(f"namespace {self.name} not started")
        return self.init_pid

    def start(self) -> None:
        lower = rootfs.build(self.suite, self.engine)
        podman = self.engine.startswith("podman")
        script = _setup_script(
            lower, self.workdir, PODMAN_TMPFS if podman else (), cgroup2=self.engine == "podman6"
        )
        log = (self.logdir / f"{self.name}-init.log").open("ab")
        # --kill-child: when the holder dies, so does the init, and with it every process of the
        # PID namespace.
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child",
             "--propagation", "private", "--", "sh", "-c", script],
            preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        mine = ns_inode(1, "mnt")
        deadline = time.monotonic() + 15
        while True:
            child = self._child()
            if child and ns_inode(child, "mnt") != mine and self._chrooted(child):
                self.init_pid = child
                return
            if self.holder.poll() is not None or time.monotonic() > deadline:
                text = (self.logdir / f"{self.name}-init.log").read_text(errors="replace")
                raise LabError(f"namespace {self.name} ({self.suite}) failed to start:\n{text}")
            time.sleep(0.01)

    def _child(self) -> int | None:
        assert self.holder is not None
        try:
            kids = Path(f"/proc/{self.holder.pid}/task/{self.holder.pid}/children").read_text()
        except OSError:
            return None
        return int(kids.split()[0]) if kids.split() else None

    def _chrooted(self, pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/exe").resolve().name.startswith("tini")
        except OSError:
            return False

    def prefix(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "-p", "-r", "-w", "--"]

    def pid_inside(self, pid: int) -> int:
        """`nsenter -p` forks: the process spawn() started is the child of `pid`, and inside
        the PID namespace (where the lab's systemctl stand-in looks) it has another number, the
        last of its NSpid line."""
        children = Path(f"/proc/{pid}/task/{pid}/children")
        deadline = time.monotonic() + 10
        while not children.read_text().split():
            if time.monotonic() > deadline:
                raise LabError(f"nsenter {pid} started nothing")
            time.sleep(0.005)
        child = children.read_text().split()[0]
        for line in Path(f"/proc/{child}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
        raise LabError(f"no NSpid for {child}")

    def overlay_changes(self) -> dict[str, str]:
        """What the lab wrote into the root's overlay (Lab.overlay_changes): its upper layer,
        seen from the lab's mount namespace outside the chroot, where the tmpfs holding it is
        mounted. A character device there is a whiteout: a file of the rootfs deleted."""
        upper = self.workdir / "rootfs-rw" / "upper"
        argv = [*self.lan_prefix(), "find", str(upper), "-mindepth", "1", "-printf", r"%y %P\n"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        kinds = {"f": "file", "d": "dir", "l": "symlink", "c": "deleted"}
        found = {}
        for line in out.splitlines():
            kind, _, rel = line.partition(" ")
            found["/" + rel] = kinds.get(kind, kind)
        return found

    def lan_prefix(self) -> list[str]:
        """Where a LAN neighbour namespace is made: the lab's mount namespace at the machine's
        own root (its tools), outside the chroot and its PID namespace."""
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "--"]
