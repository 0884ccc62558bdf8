"""systemd-networkd 247.3 that really has bug #18378, built from Debian bullseye's source.

    python -m tests.lab.networkd_bug [--rebuild]   (build or reuse; prints the time it took)

Debian's binary 247.3-7+deb11u5 carries the upstream fix backported (247.3-4, Debian #985510):
it re-adds IPv6ProxyNDPAddress= entries itself after a link flap, so it cannot show the bug
v6gen's hooks exist for. This builds the same source with that one patch reversed, and only
systemd-networkd and the libsystemd-shared it links (recipe: ../shared/notes/lab-recipe.md).

Nothing on the machine is upgraded: the source and the -dev packages come through private apt
configurations pointed at the machine's own mirror (packages.py), the -dev packages are merely
extracted into a private sysroot (installing libcap-dev would upgrade the machine's libcap2),
and bullseye's meson comes from PyPI into a private venv. Only the compiler and build tools are
apt-get installed when missing. The build runs in a temporary directory, renamed into place
with a stamp of the recipe's inputs once complete; a changed recipe builds again.

The result has the layout of the extracted Debian package, lib/systemd/systemd-networkd and
lib/systemd/libsystemd-shared-247.so, so the lab runs both the same way (LD_LIBRARY_PATH).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from . import packages
from .nsproc import LabError

DEST = packages.CACHE_DIR / "networkd-247-bug"
STAMP = "v6gen-lab-networkd.stamp"
# Bump when the build changes in a way the inputs below do not show.
RECIPE = "1"
SOURCE = "systemd=247.3-7+deb11u5"
DSC = "systemd_247.3-7+deb11u5.dsc"
# The backport of upstream PR #18494, which fixed #18378.
FIX_PATCH = "debian/patches/network-Delay-addition-of-IPv6-Proxy-NDP-addresses.patch"
# bullseye's own meson: 247's build files predate what later versions reject.
MESON = "meson==0.56.2"
# Compiler and tools, installed with apt-get when missing (none of them replaces a library).
TOOLS = (
    "gcc", "libc6-dev", "binutils", "ninja-build", "pkg-config", "patch", "dpkg-dev",
    "xz-utils", "python3-venv",
)  # fmt: skip
# Extracted into the sysroot, never installed. libmount-dev's pkg-config file pulls in blkid
# and selinux, selinux's sepol and pcre2.
SYSROOT_DEBS = (
    "gperf", "m4", "libmount-dev", "libblkid-dev", "libselinux1-dev", "libsepol-dev",
    "libpcre2-dev", "libcap-dev",
)  # fmt: skip
# Every optional feature of 247's meson_options.txt off: networkd needs none of them, and each
# would need more -dev packages.
FEATURES_OFF = (
    "repart", "oomd", "homed", "remote", "nss-mymachines", "nss-resolve", "importd", "man",
    "html", "seccomp", "selinux", "apparmor", "polkit", "acl", "audit", "blkid", "fdisk", "kmod",
    "pam", "pwquality", "microhttpd", "libcryptsetup", "libcurl", "libidn2", "libidn", "libiptc",
    "qrencode", "gcrypt", "gnutls", "openssl", "p11kit", "libfido2", "elfutils", "zlib", "bzip2",
    "xz", "lz4", "zstd", "xkbcommon", "pcre2", "glib", "dbus", "gnu-efi",
)  # fmt: skip
MESON_OPTIONS = (
    "--buildtype=plain", "-Dmode=release", "-Dtests=false",
    *(f"-D{f}=false" for f in FEATURES_OFF),
)  # fmt: skip
TARGETS = ("systemd-networkd",)
MULTIARCH = "usr/lib/x86_64-linux-gnu"
OUTPUTS = {"systemd-networkd": "systemd-networkd", "src/shared/libsystemd-shared-247.so": ""}


def stamp_text() -> str:
    lines = [
        f"recipe {RECIPE}",
        f"source {SOURCE}",
        f"reversed {FIX_PATCH}",
        f"meson {MESON}",
        *(f"meson-option {o}" for o in MESON_OPTIONS),
        *(f"sysroot {d}" for d in SYSROOT_DEBS),
    ]
    return "".join(f"{line}\n" for line in lines)


def is_current(dest: Path = DEST) -> bool:
    stamp = dest / STAMP
    return stamp.is_file() and stamp.read_text() == stamp_text()


def networkd_247_bug() -> Path:
    """Root of the built networkd (lib/systemd/systemd-networkd inside), built first if missing
    or stale."""
    if is_current():
        return DEST
    packages.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # Two test runs at once would build twice and race on the rename.
    with _locked(packages.CACHE_DIR / "networkd-247-bug.lock"):
        if not is_current():
            # What an interrupted build left behind (nothing is mounted there).
            for leftover in packages.CACHE_DIR.glob(".networkd-247-bug.*"):
                shutil.rmtree(leftover, ignore_errors=True)
            _build()
    return DEST


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _run(argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None = None) -> None:
    res = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
        raise LabError(f"{' '.join(argv)} failed (exit {res.returncode}) in {cwd}:\n{tail}")


def _codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip('"')
    raise LabError("no VERSION_CODENAME in /etc/os-release")


def _build() -> None:
    packages.ensure_packages(TOOLS)
    work = Path(tempfile.mkdtemp(prefix=".networkd-247-bug.", dir=packages.CACHE_DIR))
    try:
        tree = _source(work)
        sysroot = _sysroot(work)
        meson = _meson(work)
        env = {
            **os.environ,
            "PATH": f"{sysroot}/usr/bin:{meson.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            # Only the sysroot's .pc files, their paths prefixed with it.
            "PKG_CONFIG_LIBDIR": f"{sysroot}/{MULTIARCH}/pkgconfig:{sysroot}/usr/share/pkgconfig",
            "PKG_CONFIG_SYSROOT_DIR": str(sysroot),
        }
        flags = [
            f"-Dc_args=-isystem {sysroot}/usr/include",
            f"-Dc_link_args=-L{sysroot}/{MULTIARCH}",
        ]
        _run([str(meson), "setup", "build", *MESON_OPTIONS, *flags], tree, env)
        _run(["ninja", "-C", "build", *TARGETS], tree, env)
        out = work / "out"
        (out / "lib/systemd").mkdir(parents=True)
        for built, name in OUTPUTS.items():
            src = tree / "build" / built
            shutil.copy2(src, out / "lib/systemd" / (name or src.name))
        _check(out)
        (out / STAMP).write_text(stamp_text())
        old = work / "old"
        if DEST.exists():
            DEST.rename(old)
        out.rename(DEST)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _source(work: Path) -> Path:
    """bullseye's systemd source with the #18378 fix reversed."""
    apt_dir = packages._suite_apt(packages.BULLSEYE, "deb-src")
    src = work / "src"
    src.mkdir()
    packages._apt(apt_dir, "source", "--download-only", SOURCE, cwd=src)
    # apt-get already checked the files against the signed Sources index; the .dsc's own
    # signature would need Debian's developer keyring.
    _run(["dpkg-source", "--no-check", "-x", DSC, "tree"], src)
    tree = src / "tree"
    _run(["patch", "-R", "-p1", "-i", FIX_PATCH], tree)
    return tree


def _sysroot(work: Path) -> Path:
    """The -dev packages of the machine's own release, extracted, their library links pointed
    at the machine's libraries, which the binary will load at run time."""
    apt_dir = packages._suite_apt(_codename())
    debs = work / "debs"
    debs.mkdir()
    packages._apt(apt_dir, "download", *SYSROOT_DEBS, cwd=debs)
    sysroot = work / "sysroot"
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(sysroot)], work)
    for link in (sysroot / MULTIARCH).glob("*.so"):
        if link.is_symlink() and not link.exists():
            _relink(link)
    return sysroot


def _relink(link: Path) -> None:
    # The -dev package's libfoo.so points at the runtime package's file, which is not in the
    # sysroot (and may be another point release than the machine's): take the machine's
    # libfoo.so.N instead. Links to libraries the build does not use may stay dangling.
    machine = sorted(Path("/", MULTIARCH).glob(link.name + ".*"), key=lambda p: len(p.name))
    if machine:
        link.unlink()
        link.symlink_to(machine[0])


def _meson(work: Path) -> Path:
    venv = work / "meson-venv"
    _run(["/usr/bin/python3", "-m", "venv", str(venv)], work)
    _run([str(venv / "bin/pip"), "install", "-q", MESON], work)
    return venv / "bin/meson"


def _check(root: Path) -> None:
    """The binary runs with the library beside it: 247's networkd knows no --version, and any
    argument makes it exit at once with its usage complaint, after the loader did its part."""
    res = subprocess.run(
        [str(root / "lib/systemd/systemd-networkd"), "--version"],
        env={"LD_LIBRARY_PATH": str(root / "lib/systemd")},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if "This program takes no arguments" not in res.stderr:
        raise LabError(f"the built systemd-networkd does not run: {res.stdout!r} {res.stderr!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rebuild", action="store_true", help="build even when cached")
    args = ap.parse_args()
    if args.rebuild:
        (DEST / STAMP).unlink(missing_ok=True)
    t0 = time.monotonic()
    root = networkd_247_bug()
    print(f"{root} ready in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
