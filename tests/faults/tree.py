"""Byte-level snapshots of a directory tree: type, mode, owner and content (or link target) of
every entry, so a test can prove that a run changed nothing, or exactly what it changed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

# kind ("f", "d", "l" or "?"), permission bits, uid, gid, content (file) or target (symlink)
Entry = tuple[str, int, int, int, bytes]
Snapshot = dict[str, Entry]


def entry(path: Path) -> Entry:
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return ("l", mode, st.st_uid, st.st_gid, str(path.readlink()).encode())
    if stat.S_ISREG(st.st_mode):
        return ("f", mode, st.st_uid, st.st_gid, path.read_bytes())
    if stat.S_ISDIR(st.st_mode):
        return ("d", mode, st.st_uid, st.st_gid, b"")
    return ("?", mode, st.st_uid, st.st_gid, b"")


def snapshot(*roots: Path, base: Path | None = None) -> Snapshot:
    """Every entry under each root (the roots themselves included), keyed by its path relative
    to `base` (default: the first root's parent). Symlinks are recorded, never followed."""
    base = base if base is not None else roots[0].parent
    found: Snapshot = {}
    for root in roots:
        if not os.path.lexists(root):
            continue
        found[str(root.relative_to(base))] = entry(root)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in sorted(dirnames + filenames):
                p = Path(dirpath) / name
                found[str(p.relative_to(base))] = entry(p)
    return found


def changed(before: Snapshot, after: Snapshot) -> dict[str, tuple[Entry | None, Entry | None]]:
    """path -> (before, after) for every entry that differs, appeared or went."""
    return {
        k: (before.get(k), after.get(k))
        for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k)
    }


def texts(snap: Snapshot) -> dict[str, str]:
    """The regular files' contents as text, for readable assertion failures."""
    return {k: v[4].decode(errors="replace") for k, v in snap.items() if v[0] == "f"}
