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

# The mirror's Release files are past their Valid-Until on this machine's clock; its own apt
# configuration says the same.
APT_OPTIONS = ('Acquire::Check-Valid-Until "false"', 'Acquire::Check-Date "false"')


def package_list(suite: str) -> tuple[str, ...]:
    base = tuple(p for p in BASE_PACKAGES if p not in NOT_IN_SUITE.get(suite, ()))
    return base + EXTRA_PACKAGES.get(suite, ())


def _stamp_text(suite: str) -> str:
    return f"recipe {RECIPE}\nsuite {suite}\n" + "".join(f"{p}\n" for p in package_list(suite))


def path(suite: str) -> Path:
    return ROOTFS_DIR / suite


def is_current(suite: str) -> bool:
    stamp = path(suite) / STAMP
    return stamp.is_file() and stamp.read_text() == _stamp_text(suite)


def _remove(tree: Path) -> None:
    # rm -rf on a tree that may hold device nodes and root-owned modes; nothing is mounted
    # there (builds and labs mount elsewhere), --one-file-system guards against surprises.
    if tree.exists() or tree.is_symlink():
        subprocess.run(["rm", "-rf", "--one-file-system", str(tree)], check=True)


@contextlib.contextmanager
def _locked(suite: str) -> Iterator[None]:
    """One build of a suite at a time, across processes (two test runs side by side)."""
    ROOTFS_DIR.mkdir(parents=True, exist_ok=True)
    with (ROOTFS_DIR / f".{suite}.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build(suite: str) -> Path:
    """The cached root filesystem of `suite`, built first if missing or stale.

    A stale tree is replaced, not changed in place; a lab of another process still running on
    it (overlay lower layer) may then see its files vanish: rebuild when no lab runs."""
    if suite not in SUITES:
        raise LabError(f"unknown suite {suite!r} (known: {', '.join(SUITES)})")
    if is_current(suite):
        return path(suite)
    with _locked(suite):
        if not is_current(suite):  # another process may have built it meanwhile
            _build(suite)
    return path(suite)


def _build(suite: str) -> None:
    dest = path(suite)
    packages.ensure_packages(("mmdebstrap",))
    for leftover in ROOTFS_DIR.glob(f".{suite}.[bo]*"):  # .building-*, .old-*: interrupted
        _remove(leftover)
    tmp = ROOTFS_DIR / f".{suite}.building-{os.getpid()}"
    uri, signed_by = packages.debian_mirror()
    opt = f" [signed-by={signed_by}]" if signed_by else ""
    argv = ["mmdebstrap", "--variant=apt", "--mode=root", "--quiet"]
    argv += [f"--aptopt={o}" for o in APT_OPTIONS]
    argv += [f"--include={','.join(package_list(suite))}"]
    argv += [suite, str(tmp), f"deb{opt} {uri} {suite} main"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    res = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        _remove(tmp)
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
        raise LabError(f"mmdebstrap {suite} failed (exit {res.returncode}):\n{tail}")
    _finish(tmp, suite)
    old = ROOTFS_DIR / f".{suite}.old-{os.getpid()}"
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    _remove(old)


def _finish(tree: Path, suite: str) -> None:
    """What a booted system has and mmdebstrap leaves out."""
    # mmdebstrap leaves /etc/machine-id empty; networkd derives DUIDs and the bus its ID from it.
    (tree / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    # The apt options for later use inside (the lab's dpkg mode on a release).
    conf = tree / "etc/apt/apt.conf.d/99v6gen-lab"
    conf.write_text("".join(f"{o};\n" for o in APT_OPTIONS))
    # Mount points the lab binds over; created now so the cached tree never changes later.
    for d in ("run", "tmp", "var/lib/docker"):
        (tree / d).mkdir(parents=True, exist_ok=True)
    (tree / STAMP).write_text(_stamp_text(suite))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("suites", nargs="*", default=list(SUITES))
    ap.add_argument("--rebuild", action="store_true", help="build even when cached")
    args = ap.parse_args()
    for suite in args.suites:
        if args.rebuild and path(suite).exists():
            (path(suite) / STAMP).unlink(missing_ok=True)
        t0 = time.monotonic()
        tree = build(suite)
        size = subprocess.run(["du", "-sh", str(tree)], capture_output=True, text=True).stdout
        print(f"{suite}: {tree} ready in {time.monotonic() - t0:.1f}s ({size.split()[0]})")


if __name__ == "__main__":
    main()
