"""Whole Debian releases for the lab's host side: mmdebstrap'd root filesystems, cached.

    python -m tests.lab.rootfs [SUITE ...]   (build or reuse; prints the time each took)

Each suite's tree is built from the machine's own mirror (read at run time, as packages.py does)
into a temporary directory and renamed into place only when complete, so an interrupted build is
never taken for a finished one. A stamp file inside records the package list and the recipe
version: when either changes, the tree is built again.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from . import packages
from .nsproc import LabError

ROOTFS_DIR = packages.CACHE_DIR / "rootfs"
STAMP = "v6gen-lab-rootfs.stamp"
# Bump when the build itself changes in a way the package list does not show.
RECIPE = "1"
# bookworm: for the booted tier (boot.py); the chrooted lab runs bookworm on the machine itself.
SUITES = ("bookworm", "trixie", "sid")

# The host side of the lab: networkd (inside the systemd package on both), its dispatcher, the
# D-Bus daemon, dockerd with its runtime and compose (v2, which reads the lab's compose files),
# the firewall tools dockerd calls, busybox for the container image, and v6gen's interpreter
# with Debian's own builds of its libraries. Then everything debian/tests/run-system-python
# checks for, since inside the chroot (no network) it cannot apt-get what is missing, and mount,
# which its D-Bus tier calls and which --variant=apt leaves out (Priority: required, not listed).
BASE_PACKAGES = (
    "systemd", "dbus", "iproute2", "iptables", "nftables", "procps",
    "docker.io", "docker-cli", "docker-compose", "containerd", "runc", "tini",
    "networkd-dispatcher", "busybox-static",
    "python3", "python3-typer", "python3-docker", "python3-dbus-next", "python3-jinja2",
    "python3-yaml",
    "python3-pytest", "python3-hypothesis", "dbus-daemon", "util-linux", "mount",
)  # fmt: skip
# sid moved the static tini (what docker's --init binds into containers) to its own package.
EXTRA_PACKAGES = {"sid": ("tini-static",)}
# bookworm's docker.io (20.10) still carries the CLI itself.
NOT_IN_SUITE = {"bookworm": ("docker-cli",)}
# The Podman flavour (issue 15): the same host without Docker, so v6gen must find Podman's socket
# on its own. netavark and aardvark-dns are Podman's network stack; runc because crun refuses
# this machine's hybrid cgroup layout (see PODMAN_CONTAINERS_CONF).
DOCKER_ONLY = ("docker.io", "docker-cli", "docker-compose", "containerd")
PODMAN_PACKAGES = ("podman", "netavark", "aardvark-dns", "conmon", "catatonit")
# Podman 6 (issue 21): sid's tree with podman and netavark from experimental, where Podman 6.1
# and netavark 2.0 are (nftables only); the rest, aardvark-dns included, from sid.
PODMAN6_PACKAGES = ("podman/experimental", "netavark/experimental", "aardvark-dns", "conmon",
                    "catatonit")  # fmt: skip
ENGINES = ("docker", "podman", "podman6")
EXPERIMENTAL = "experimental"
# Podman 4.3 (bookworm) too: the machine is bookworm but has no Podman, and the Docker labs must
# not meet one there; its tree is bookworm's own packages, as trixie's and sid's are.
# crun (Podman's default runtime) fails to create containers on the machine's hybrid cgroup
# layout (cgroup v1 controllers with a v2 tree at /sys/fs/cgroup/unified), which the chroot
# sees bound in: trixie's crun 1.21 says "cgroups in hybrid mode not supported, drop all
# controllers from cgroupv2". runc, which dockerd uses on the same tree, copes with it. No
# systemd runs in the lab: cgroups are made directly (cgroupfs), events go to a file.
# netavark named: bookworm's 4.3 would otherwise weigh the CNI file its package ships.
PODMAN_CONTAINERS_CONF = """[containers]
log_driver = "k8s-file"

[network]
network_backend = "netavark"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""

# Podman 6 refuses cgroups v1 ("Cgroups v1 not supported"): its lab mounts a cgroup2 tree of
# its own over /sys/fs/cgroup (release.py). On this machine every controller is bound to a v1
# hierarchy, so that tree has none, and a pids limit (Podman's default 2048) can't be set.
PODMAN6_CONTAINERS_CONF = PODMAN_CONTAINERS_CONF.replace(
    'log_driver = "k8s-file"\n', 'log_driver = "k8s-file"\npids_limit = 0\n'
)

# The mirror's Release files are past their Valid-Until on this machine's clock; its own apt
# configuration says the same.
APT_OPTIONS = ('Acquire::Check-Valid-Until "false"', 'Acquire::Check-Date "false"')


def package_list(suite: str, engine: str = "docker") -> tuple[str, ...]:
    if engine == "podman":
        base = tuple(p for p in BASE_PACKAGES if p not in DOCKER_ONLY) + PODMAN_PACKAGES
    elif engine == "podman6":
        base = tuple(p for p in BASE_PACKAGES if p not in DOCKER_ONLY) + PODMAN6_PACKAGES
    else:
        base = tuple(p for p in BASE_PACKAGES if p not in NOT_IN_SUITE.get(suite, ()))
    return base + EXTRA_PACKAGES.get(suite, ())


def _stamp_text(suite: str, engine: str = "docker") -> str:
    podman = f"engine {engine}\n{containers_conf(engine)}" if engine != "docker" else ""
    head = f"recipe {RECIPE}\nsuite {suite}\n{podman}"
    return head + "".join(f"{p}\n" for p in package_list(suite, engine))


def containers_conf(engine: str) -> str:
    return PODMAN6_CONTAINERS_CONF if engine == "podman6" else PODMAN_CONTAINERS_CONF


def _name(suite: str, engine: str) -> str:
    """A tree of its own per engine: the Docker trees other labs run on are never rebuilt."""
    return suite if engine == "docker" else f"{suite}-{engine}"


def path(suite: str, engine: str = "docker") -> Path:
    return ROOTFS_DIR / _name(suite, engine)


def is_current(suite: str, engine: str = "docker") -> bool:
    stamp = path(suite, engine) / STAMP
    return stamp.is_file() and stamp.read_text() == _stamp_text(suite, engine)


def _remove(tree: Path) -> None:
    # rm -rf on a tree that may hold device nodes and root-owned modes; nothing is mounted
    # there (builds and labs mount elsewhere), --one-file-system guards against surprises.
    if tree.exists() or tree.is_symlink():
        subprocess.run(["rm", "-rf", "--one-file-system", str(tree)], check=True)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One build of a tree at a time, across processes (two test runs side by side)."""
    ROOTFS_DIR.mkdir(parents=True, exist_ok=True)
    with (ROOTFS_DIR / f".{name}.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build(suite: str, engine: str = "docker") -> Path:
    """The cached root filesystem of `suite`, built first if missing or stale.

    A stale tree is replaced, not changed in place; a lab of another process still running on
    it (overlay lower layer) may then see its files vanish: rebuild when no lab runs."""
    if suite not in SUITES:
        raise LabError(f"unknown suite {suite!r} (known: {', '.join(SUITES)})")
    if engine not in ENGINES:
        raise LabError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    if engine == "podman6" and suite != "sid":
        raise LabError("Podman 6 comes from experimental, on top of sid only")
    if is_current(suite, engine):
        return path(suite, engine)
    with _locked(_name(suite, engine)):
        if not is_current(suite, engine):  # another process may have built it meanwhile
            _build(suite, engine)
    return path(suite, engine)


def _build(suite: str, engine: str) -> None:
    dest, name = path(suite, engine), _name(suite, engine)
    packages.ensure_packages(("mmdebstrap",))
    for leftover in ROOTFS_DIR.glob(f".{name}.[bo]*"):  # .building-*, .old-*: interrupted
        _remove(leftover)
    tmp = ROOTFS_DIR / f".{name}.building-{os.getpid()}"
    uri, signed_by = packages.debian_mirror()
    opt = f" [signed-by={signed_by}]" if signed_by else ""
    argv = ["mmdebstrap", "--variant=apt", "--mode=root", "--quiet"]
    argv += [f"--aptopt={o}" for o in APT_OPTIONS]
    argv += [f"--include={','.join(package_list(suite, engine))}"]
    argv += [suite, str(tmp), f"deb{opt} {uri} {suite} main"]
    if engine == "podman6":
        argv += [f"deb{opt} {uri} {EXPERIMENTAL} main"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    res = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        _remove(tmp)
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
        raise LabError(f"mmdebstrap {suite} failed (exit {res.returncode}):\n{tail}")
    _finish(tmp, suite, engine)
    old = ROOTFS_DIR / f".{name}.old-{os.getpid()}"
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    _remove(old)


def _finish(tree: Path, suite: str, engine: str) -> None:
    """What a booted system has and mmdebstrap leaves out."""
    # mmdebstrap leaves /etc/machine-id empty; networkd derives DUIDs and the bus its ID from it.
    (tree / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    # The apt options for later use inside (the lab's dpkg mode on a release).
    conf = tree / "etc/apt/apt.conf.d/99v6gen-lab"
    conf.write_text("".join(f"{o};\n" for o in APT_OPTIONS))
    # Mount points the lab binds over; created now so the cached tree never changes later.
    for d in ("run", "tmp", "var/lib/docker", "var/lib/containers"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    if engine != "docker":
        conf = tree / "etc/containers/containers.conf.d/50-v6gen-lab.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(containers_conf(engine))
    (tree / STAMP).write_text(_stamp_text(suite, engine))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("suites", nargs="*", default=list(SUITES))
    ap.add_argument("--rebuild", action="store_true", help="build even when cached")
    ap.add_argument("--engine", choices=ENGINES, default="docker")
    args = ap.parse_args()
    for suite in args.suites:
        if args.rebuild and path(suite, args.engine).exists():
            (path(suite, args.engine) / STAMP).unlink(missing_ok=True)
        t0 = time.monotonic()
        tree = build(suite, args.engine)
        size = subprocess.run(["du", "-sh", str(tree)], capture_output=True, text=True).stdout
        print(f"{suite}: {tree} ready in {time.monotonic() - t0:.1f}s ({size.split()[0]})")


if __name__ == "__main__":
    main()
