"""The v6gen .deb for the lab: built once per source state with the steps of `make deb` (a copy of
the tree, dpkg-buildpackage, lintian) and cached under /var/cache/v6gen-lab/deb/<hash>; and the
machine's own package state, which no lab may change.

The build runs with DEB_BUILD_OPTIONS=nocheck: the unit tier is `make unit`'s (and `make deb`'s)
job, and without it tests/ does not go into the package, so the hash leaves tests/ out and editing
a test needs no rebuild. The fixtures (v6gen_deb, host_before) are in conftest.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import packages
from .labhost import REPO

HOOK_BASE = "/usr/lib/networkd-dispatcher"
BUILDS = packages.CACHE_DIR / "deb"
KEEP_BUILDS = 3
# Not in the .deb when the build runs with nocheck: changes there need no rebuild.
NOT_IN_DEB = ("tests/", "debian/tests/", "bench/")
# Left out of a copy of a tree that is not a git checkout (what .gitignore says for git).
NON_SOURCE_DIRS = frozenset(
    {".git", ".venv", "build", "dist", ".pybuild", "__pycache__", ".pytest_cache",
     ".mypy_cache", ".ruff_cache", ".hypothesis"}
)  # fmt: skip
NON_SOURCE = re.compile(
    r"(^|/)[^/]*\.pyc$|^debian/(v6gen|\.debhelper)/|^debian/(files|[^/]*\.substvars"
    r"|[^/]*debhelper[^/]*)$"
)

# The machine's package state; dpkg mode must leave all of it as it was.
HOST_WATCH = (
    "/var/lib/dpkg/status",
    "/var/lib/dpkg/info",
    "/var/log/dpkg.log",
    "/var/log/apt",
    "/var/log/apt/history.log",
    "/var/log/apt/term.log",
    "/var/lib/apt/extended_states",
    "/var/lib/apt/lists",
    "/var/cache/apt",
    "/var/cache/apt/archives",
    "/var/cache/debconf/config.dat",
    "/var/lib/systemd/deb-systemd-helper-enabled",
    "/etc/systemd/system",
    "/etc/ld.so.cache",
    "/usr/bin",
    "/usr/bin/systemctl",
    "/usr/sbin/policy-rc.d",
    "/usr/lib/python3/dist-packages",
    "/usr/lib/python3/dist-packages/docker",
    "/usr/lib/python3/dist-packages/yaml",
    f"{HOOK_BASE}/routable.d",
    "/etc/v6gen",
    "/var/lib/v6gen",
    "/etc/systemd/network",
    "/etc/sysctl.d",
)


# ----- the .deb -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Deb:
    path: Path
    depends: tuple[str, ...]  # package names, versions and alternatives dropped
    files: tuple[str, ...]  # what the package installs that is not a directory
    dirs: tuple[str, ...]  # the package's directories with "v6gen" in their name
    build_seconds: float | None  # None: from the cache

    @classmethod
    def read(cls, path: Path, build_seconds: float | None) -> Deb:
        depends = _run(["dpkg-deb", "-f", str(path), "Depends"]).stdout
        names = []
        for dep in depends.split(","):
            first = dep.split("|")[0].strip()
            names.append(first.split()[0].split(":")[0] if first else "")
        data = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(path)], capture_output=True, check=True
        ).stdout
        files, dirs = [], []
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar.getmembers():
                name = "/" + m.name.removeprefix("./").rstrip("/")
                if not m.isdir():
                    files.append(name)
                elif "v6gen" in name.rsplit("/", 1)[-1]:
                    dirs.append(name)
        return cls(path, tuple(n for n in names if n), tuple(files), tuple(dirs), build_seconds)


def _run(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if res.returncode != 0:
        out = (res.stdout + res.stderr).splitlines()[-60:]
        raise RuntimeError(f"{' '.join(argv)}: exit {res.returncode}\n" + "\n".join(out))
    return res


def source_files() -> list[str]:
    """What `make deb` copies: git's tracked and untracked-but-not-ignored files."""
    if (REPO / ".git").exists() and shutil.which("git"):
        out = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            check=True,
        ).stdout
        names = [n for n in out.decode().split("\0") if n]
    else:  # an unpacked source package (autopkgtest)
        names = []
        for top, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in NON_SOURCE_DIRS]
            rel = Path(top).relative_to(REPO)
            names += [str(rel / f) if str(rel) != "." else f for f in files]
        names = [n for n in names if not NON_SOURCE.search(n)]
    return sorted(n for n in names if os.path.lexists(REPO / n))


def tree_hash(names: list[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        p = REPO / name
        st = p.lstat()
        if stat.S_ISLNK(st.st_mode):
            body = b"link:" + str(p.readlink()).encode()
        else:
            body = (b"x:" if st.st_mode & 0o111 else b"f:") + p.read_bytes()
        h.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
    return h.hexdigest()[:20]


def _ensure_build_deps(src: Path) -> None:
    tools = all(shutil.which(t) for t in ("dpkg-buildpackage", "dpkg-checkbuilddeps", "lintian"))
    if (
        tools
        and subprocess.run(["dpkg-checkbuilddeps"], cwd=src, capture_output=True).returncode == 0
    ):
        return
    _run(["make", "-C", str(REPO), "deb-deps"], timeout=900)


def _build(names: list[str], out: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=BUILDS))
    try:
        src = tmp / "v6gen"
        for name in names:
            dest = src / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest, follow_symlinks=False)
        _ensure_build_deps(src)
        env = {
            "HOME": os.environ.get("HOME", "/root"),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "DEB_BUILD_OPTIONS": "nocheck",
        }
        _run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env, timeout=900)
        changes = next(tmp.glob("v6gen_*.changes"))
        _run(["lintian", "--fail-on", "error,warning", str(changes)], timeout=600)
        staged = tmp / "out"
        staged.mkdir()
        for f in tmp.glob("v6gen_*"):
            f.rename(staged / f.name)
        staged.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_deb() -> Deb:
    """The .deb of the tree as it is, built at most once per content hash."""
    names = source_files()
    out = BUILDS / tree_hash([n for n in names if not n.startswith(NOT_IN_DEB)])
    BUILDS.mkdir(parents=True, exist_ok=True)
    took: float | None = None
    with (BUILDS / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building the same tree
        if not out.is_dir():
            t0 = time.monotonic()
            _build(names, out)
            took = time.monotonic() - t0
        old = sorted(
            (d for d in BUILDS.iterdir() if d.is_dir() and d != out and len(d.name) == 20),
            key=lambda d: d.stat().st_mtime,
        )
        for d in old[: max(0, len(old) - (KEEP_BUILDS - 1))]:
            shutil.rmtree(d, ignore_errors=True)
        out.touch()
    return Deb.read(next(out.glob("v6gen_*_all.deb")), took)


def host_state() -> dict[str, object]:
    seen: dict[str, object] = {}
    for p in HOST_WATCH:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            seen[p] = None
            continue
        seen[p] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    res = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "v6gen"],
        capture_output=True,
        text=True,
        check=False,
    )
    seen["dpkg-query v6gen"] = (res.returncode, res.stdout)
    return seen


def assert_host_untouched(before: dict[str, object]) -> None:
    after = host_state()
    changed = {k: (v, after[k]) for k, v in before.items() if after[k] != v}
    assert not changed, f"dpkg mode leaked onto the machine: {changed}"


def assert_packaged_hooks(path: Callable[[str], Path]) -> None:
    """The package's six hooks in HOOK_BASE, as networkd-dispatcher runs them: it skips anything
    (file or directory) that is not exactly 0755 root:root. `path` maps a path inside the
    system under test to one this process can read."""
    hooks = sorted(path(HOOK_BASE).glob("*.d/50-v6gen"))
    assert len(hooks) == 6, hooks
    for hook in hooks:
        for p in (hook, hook.parent):
            st = p.stat()
            assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0), p
