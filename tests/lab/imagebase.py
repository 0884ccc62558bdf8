"""The base image for image/Dockerfile in the lab, where no registry serves debian:bookworm-slim.

    python -m tests.lab.imagebase   (build or reuse; prints where and how long it took)

A slim bookworm made the way Debian's slim images are (`mmdebstrap --variant=minbase` from the
machine's own mirror), with the packages image/Dockerfile installs already in it: the lab's
`docker build` has no network, and the Dockerfile runs `apt-get update` only when one of them is
missing. Cached as one tarball for `docker import`; a stamp next to it records the package list,
so a changed list builds it again. A cache of its own: the lab's root filesystems are not
touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from . import packages
from .labhost import REPO
from .nsproc import LabError
from .rootfs import APT_OPTIONS

TARBALL = packages.CACHE_DIR / "image-base-bookworm.tar"
IMAGE = "v6gen-image-base:bookworm"
SUITE = "bookworm"


def image_packages() -> tuple[str, ...]:
    """The Dockerfile's own list (its PACKAGES argument), so the two cannot drift."""
    text = (REPO / "image/Dockerfile").read_text(encoding="utf-8")
    match = re.search(r'^ARG PACKAGES="([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise LabError('image/Dockerfile has no ARG PACKAGES="..." line')
    return tuple(match.group(1).split())


def _stamp() -> Path:
    return TARBALL.with_suffix(".stamp")


def _stamp_text() -> str:
    head = f"suite {SUITE}\nvariant minbase\nrecipe 2\n"
    return head + "".join(f"{p}\n" for p in image_packages())


def build() -> Path:
    if _stamp().is_file() and _stamp().read_text() == _stamp_text() and TARBALL.is_file():
        return TARBALL
    TARBALL.parent.mkdir(parents=True, exist_ok=True)
    with (TARBALL.parent / ".image-base.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (_stamp().is_file() and _stamp().read_text() == _stamp_text()):
            _build()
    return TARBALL


def _build() -> None:
    packages.ensure_packages(("mmdebstrap",))
    uri, signed_by = packages.debian_mirror()
    opt = f" [signed-by={signed_by}]" if signed_by else ""
    tmp = TARBALL.with_name(f".{TARBALL.name}.{os.getpid()}.tar")
    argv = ["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet"]
    argv += [f"--aptopt={o}" for o in APT_OPTIONS]
    # The Dockerfile installs with --no-install-recommends: so does its base.
    argv += ['--aptopt=APT::Install-Recommends "false"']
    argv += [f"--include={','.join(image_packages())}"]
    # As Debian's slim images: no documentation, and no apt lists (an image's first step
    # is `apt-get update`; here the Dockerfile finds its packages installed and skips it).
    argv += [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale", "info")]
    argv += ["--customize-hook=rm -rf $1/var/lib/apt/lists/*"]
    argv += [SUITE, str(tmp), f"deb{opt} {uri} {SUITE} main"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    res = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
        raise LabError(f"mmdebstrap of the image base failed (exit {res.returncode}):\n{tail}")
    tmp.rename(TARBALL)
    _stamp().write_text(_stamp_text())


if __name__ == "__main__":
    t0 = time.monotonic()
    path = build()
    size = path.stat().st_size / 2**20
    print(f"{path}: {size:.0f} MiB, {time.monotonic() - t0:.1f} s", file=sys.stderr)
