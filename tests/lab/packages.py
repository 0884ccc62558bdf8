"""Debian packages the lab needs, systemd-networkd 247.3 from Debian bullseye and 257 from
Debian trixie.

CI starts on a fresh Debian 12 machine, so missing packages are installed here. The other
networkd versions are fetched through a private apt configuration per suite, pointed at the
mirror this machine already uses (read at run time: no host name belongs in the project), and
cached across runs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from .nsproc import LabError

CACHE_DIR = Path("/var/cache/v6gen-lab")
NETWORKD_247 = "systemd=247.3-7+deb11u5"
BULLSEYE = "bullseye"
TRIXIE = "trixie"
# systemd 257 and every library its networkd and networkctl link, down to trixie's glibc (newer
# than the machine's, so they run through trixie's own loader; see networkd_257()).
TRIXIE_PACKAGES = (
    "systemd", "libsystemd-shared", "libc6", "libssl3t64", "libacl1", "libblkid1", "libcap2",
    "libcrypt1", "libmount1", "libpam0g", "libseccomp2", "libselinux1", "libaudit1",
    "libpcre2-8-0", "libcap-ng0", "zlib1g", "libzstd1",
)  # fmt: skip
TRIXIE_LIBS = ("usr/lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu/systemd")
TRIXIE_LOADER = "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"

# dbus-daemon, networkctl and networkd 252 (systemd), the daemons, and busybox for the image.
PACKAGES = (
    "dbus",
    "systemd",
    "iproute2",
    "procps",
    "util-linux",
    "docker.io",
    "docker-compose",
    "networkd-dispatcher",
    "busybox-static",
    "radvd",
)
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def missing_packages(names: tuple[str, ...] = PACKAGES) -> list[str]:
    res = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\\n", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = {line.split()[0] for line in res.stdout.splitlines() if line.endswith(" installed")}
    return [n for n in names if n not in installed]


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """Stop maintainer scripts from starting a host dockerd/radvd: the lab runs its own."""
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink()


def ensure_packages(names: tuple[str, ...] = PACKAGES) -> None:
    missing = missing_packages(names)
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _no_service_starts():
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            check=True,
            env=env,
        )


def debian_mirror(
    sources: Path = Path("/etc/apt/sources.list.d/debian.sources"),
) -> tuple[str, str]:
    """(URI, Signed-By) of the machine's main Debian archive (not -security/-updates)."""
    for para in sources.read_text().split("\n\n"):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        suites = fields.get("Suites", "").split()
        if fields.get("URIs") and any("-" not in s for s in suites):
            return fields["URIs"].split()[0], fields.get("Signed-By", "")
    raise LabError(f"no main Debian archive found in {sources}")


def _apt(apt_dir: Path, *args: str, cwd: Path | None = None) -> None:
    opts = {
        "Dir::Etc::SourceList": apt_dir / "sources.list",
        "Dir::Etc::SourceParts": apt_dir / "sources.list.d",
        "Dir::Etc::Preferences": apt_dir / "preferences",
        "Dir::Etc::PreferencesParts": apt_dir / "preferences.d",
        "Dir::State::Lists": apt_dir / "lists",
        "Dir::Cache": apt_dir / "cache",
    }
    argv = ["apt-get", "-q"]
    for key, value in opts.items():
        argv += ["-o", f"{key}={value}"]
    res = subprocess.run([*argv, *args], capture_output=True, text=True, cwd=cwd, check=False)
    if res.returncode != 0:
        raise LabError(f"apt-get {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")


def _suite_apt(suite: str, kind: str = "deb") -> Path:
    """A private apt configuration for one suite of the machine's mirror, its lists updated.
    kind "deb-src": source packages only, for `apt-get source` (networkd_bug.py)."""
    apt_dir = CACHE_DIR / (f"apt-{suite}" if kind == "deb" else f"apt-{suite}-{kind}")
    for sub in ("sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial"):
        (apt_dir / sub).mkdir(parents=True, exist_ok=True)
    uri, signed_by = debian_mirror()
    opt = f" [signed-by={signed_by}]" if signed_by else ""
    (apt_dir / "sources.list").write_text(f"{kind}{opt} {uri} {suite} main\n")
    _apt(apt_dir, "update")
    return apt_dir


def _extract(debs: list[Path], root: Path) -> None:
    tmp = root.with_name(root.name + ".tmp")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    tmp.rename(root)


def networkd_247() -> Path:
    """Root of the extracted bullseye systemd package (lib/systemd/systemd-networkd inside)."""
    root = CACHE_DIR / "systemd-247.3"
    if (root / "lib/systemd/systemd-networkd").exists():
        return root
    apt_dir = _suite_apt(BULLSEYE)
    debs = CACHE_DIR / "debs"
    debs.mkdir(exist_ok=True)
    _apt(apt_dir, "download", NETWORKD_247, cwd=debs)
    _extract([next(debs.glob("systemd_247.3-7+deb11u5_*.deb"))], root)
    return root


def release_debs(suite: str, names: tuple[str, ...], status: Path) -> list[Path]:
    """The .debs of `names` and of every dependency a system whose dpkg status file is
    `status` (a cached release tree's) lacks, from the machine's mirror's `suite`, downloaded
    once into the cache: for dpkg -i into that release's lab, whose root is the lab's overlay
    (e.g. ufw, which the cached root filesystems leave out)."""
    debs = CACHE_DIR / f"debs-{suite}-{'-'.join(names)}"
    if not any(debs.glob("*.deb")):
        (debs / "partial").mkdir(parents=True, exist_ok=True)
        _apt(
            _suite_apt(suite),
            "-o", f"Dir::State::status={status}",
            "-o", f"Dir::Cache::archives={debs}",
            "install", "--download-only", "--no-install-recommends", "-y", *names,
        )  # fmt: skip
    return sorted(debs.glob("*.deb"))


def networkd_257() -> Path:
    """Root of trixie's systemd 257 (usr/lib/systemd/systemd-networkd, usr/bin/networkctl) with
    its libraries and glibc. Run its programs through trixie_argv(): trixie's loader, told to
    take libraries only from this root."""
    root = CACHE_DIR / "systemd-257"
    if (root / "usr/lib/systemd/systemd-networkd").exists():
        return root
    apt_dir = _suite_apt(TRIXIE)
    debs = CACHE_DIR / "debs-trixie"
    subprocess.run(["rm", "-rf", str(debs)], check=True)
    debs.mkdir(parents=True)
    _apt(apt_dir, "download", *TRIXIE_PACKAGES, cwd=debs)
    _extract(sorted(debs.glob("*.deb")), root)
    version = subprocess.run(
        trixie_argv(root, "usr/lib/systemd/systemd-networkd", "--version"),
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    if not version.startswith("systemd 257"):
        subprocess.run(["rm", "-rf", str(root)], check=True)
        raise LabError(f"trixie's systemd-networkd does not run here: {version!r}")
    return root


def trixie_argv(root: Path, program: str, *args: str) -> list[str]:
    """argv running a program of networkd_257()'s root with trixie's own loader and libraries."""
    libs = ":".join(str(root / d) for d in TRIXIE_LIBS)
    return [str(root / TRIXIE_LOADER), "--library-path", libs, str(root / program), *args]
