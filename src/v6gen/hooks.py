"""The networkd-dispatcher hook: find it, install it under /etc, remove it again.

The Debian package ships the hook under /usr/lib/networkd-dispatcher/<state>.d/; elsewhere
`v6gen sync` copies it to /etc/networkd-dispatcher/<state>.d/ for every state in which a link
comes back. networkd-dispatcher silently skips a script, or a whole <state>.d directory, that is
not exactly mode 0755 and owned by root:root, so both are made so here; a directory somebody else
made differently is reported, never changed. Only the file system is touched.
"""

from __future__ import annotations

import contextlib
import os
import stat
from importlib import resources
from pathlib import Path

from v6gen import fsutil
from v6gen.paths import DISPATCHER_STATES, HOOK_NAME, Paths
from v6gen.render import HEADER

MODE = 0o755
# The hook's second line (after the shebang) starts with this; a file without it is not ours.
MARKER = f"{HEADER}: networkd-dispatcher hook"
_MARKER_SCAN = 512  # bytes: the marker sits right after the shebang


def hook_source() -> Path:
    """dispatcher-hooks/ ships inside the wheel as v6gen/dispatcher-hooks; in a source checkout
    it is the top-level directory next to src/."""
    packaged = Path(str(resources.files("v6gen"))) / "dispatcher-hooks" / HOOK_NAME
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "dispatcher-hooks" / HOOK_NAME


def local_hooks(paths: Paths) -> list[Path]:
    """Where `v6gen sync` installs the hook: etc/networkd-dispatcher/<state>.d/50-v6gen."""
    return [paths.local_hook_base / f"{state}.d" / HOOK_NAME for state in DISPATCHER_STATES]


def packaged_hooks(paths: Paths) -> list[Path]:
    """Where the Debian package installs it: usr/lib/networkd-dispatcher/<state>.d/50-v6gen."""
    return [paths.packaged_hook_base / f"{state}.d" / HOOK_NAME for state in DISPATCHER_STATES]


def is_ours(path: Path) -> bool:
    """A regular file (not a symlink) carrying v6gen's marker line."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return False
        with path.open("rb") as f:
            head = f.read(_MARKER_SCAN).decode("utf-8", errors="replace")
    except OSError:
        return False
    return any(line.startswith(MARKER) for line in head.splitlines())


def _root() -> bool:
    return os.geteuid() == 0


def _right(st: os.stat_result, kind: int) -> bool:
    """What networkd-dispatcher demands: the type, exactly 0755, root:root (when we are root)."""
    owner_ok = (st.st_uid, st.st_gid) == (0, 0) or not _root()
    return stat.S_IFMT(st.st_mode) == kind and stat.S_IMODE(st.st_mode) == MODE and owner_ok


def _make_right(path: Path) -> None:
    path.chmod(MODE)  # explicit: umask must not matter; only called on our own file or dir
    if _root():
        os.chown(path, 0, 0, follow_symlinks=False)


def _ensure_dir(paths: Paths, directory: Path, warnings: list[str], *, dry_run: bool) -> bool:
    """Create directory (and missing parents) 0755 root:root. An existing one is left as it is;
    False when the hook can't go there, with the reason in warnings."""
    missing: list[Path] = []
    probe = directory
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for d in reversed(missing):
        if not dry_run:
            d.mkdir(mode=MODE)
            _make_right(d)
    if missing:
        return True
    st = directory.lstat()
    name = paths.host_path(directory)
    if not stat.S_ISDIR(st.st_mode):
        warnings.append(
            f"{name} is not a directory (a symlink?); networkd-dispatcher skips it, so the "
            "v6gen hook was not installed there"
        )
        return False
    if not _right(st, stat.S_IFDIR):
        warnings.append(
            f"{name} is mode {stat.S_IMODE(st.st_mode):04o} owned by "
            f"{st.st_uid}:{st.st_gid}; networkd-dispatcher runs nothing in it unless it is 0755 "
            "root:root (v6gen does not change directories it did not create)"
        )
    return True


def install(
    paths: Paths, *, dry_run: bool = False, warnings: list[str] | None = None
) -> list[Path]:
    """Put the hook into etc/networkd-dispatcher/<state>.d/ for every DISPATCHER_STATES state,
    unless the package installed it under usr/lib/networkd-dispatcher (then copies of ours under
    etc are removed, since etc would shadow the package's). Returns every path changed (written,
    mode fixed, or removed); an up-to-date install returns [] and writes nothing. A file with our
    name that is not ours is left alone and reported in warnings."""
    notes: list[str] = [] if warnings is None else warnings
    if any(os.path.lexists(p) for p in packaged_hooks(paths)):
        return uninstall(paths, dry_run=dry_run)
    source = hook_source().read_bytes()
    changed: list[Path] = []
    for target in local_hooks(paths):
        if not _ensure_dir(paths, target.parent, notes, dry_run=dry_run):
            continue
        try:
            st = target.lstat()
        except FileNotFoundError:
            st = None
        if st is not None and not is_ours(target):
            notes.append(f"{paths.host_path(target)} exists but is not v6gen's; left alone")
            continue
        if st is not None and target.read_bytes() == source:
            if _right(st, stat.S_IFREG):
                continue
            if not dry_run:
                _make_right(target)
        elif not dry_run:
            fsutil.write_atomic(target, source.decode("utf-8"), mode=MODE)
            _make_right(target)
        changed.append(target)
    return changed


def _dpkg_owned(paths: Paths, directories: list[Path]) -> set[Path]:
    """Those of directories that a Debian package lists (networkd-dispatcher ships
    /etc/networkd-dispatcher/carrier.d, for one): they stay even when empty."""
    if not directories:
        return set()
    needles = {f"\n{paths.host_path(d)}\n".encode(): d for d in directories}
    owned: set[Path] = set()
    for listing in (paths.root / "var/lib/dpkg/info").glob("*.list"):
        with contextlib.suppress(OSError):
            text = b"\n" + listing.read_bytes()
            owned.update(d for needle, d in needles.items() if needle in text)
    return owned


def uninstall(paths: Paths, *, dry_run: bool = False) -> list[Path]:
    """Remove v6gen's hooks from etc/networkd-dispatcher/<state>.d/ (by name and marker), then
    each such directory if that left it empty and no package owns it. Returns the paths
    removed (or, with dry_run, that would be)."""
    removed: list[Path] = []
    emptied: list[Path] = []
    for target in local_hooks(paths):
        if not is_ours(target):
            continue
        if not dry_run:
            fsutil.remove(target)
        removed.append(target)
        left = {p.name for p in target.parent.iterdir()} - {HOOK_NAME}
        if not left:
            emptied.append(target.parent)
    keep = _dpkg_owned(paths, emptied)
    for directory in emptied:
        if directory in keep:
            continue
        if not dry_run:
            try:
                directory.rmdir()
            except OSError:
                continue  # something appeared in it meanwhile: not ours to remove
        removed.append(directory)
    return removed
