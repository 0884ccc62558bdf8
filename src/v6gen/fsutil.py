"""Crash-safe file writes: a reader (networkd, the dispatcher hook, the next sync) sees either
the whole old file or the whole new one, never a mix, even after a power cut."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TMP_SUFFIX = ".v6gen-tmp"


def sweep(directory: Path) -> None:
    """Remove the temp files that writes killed before their rename left in directory (SIGKILL
    can't be cleaned up after). Only v6gen makes these names; call this only while holding the
    lock, so that none of them is in use. A stale, complete copy of the dispatcher hook would
    otherwise stay runnable next to the real one (networkd-dispatcher runs every 0755 file)."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX):
            with contextlib.suppress(OSError):  # best effort: gone meanwhile, read-only, ...
                Path(entry.path).unlink()


def write_atomic(path: Path, data: str, mode: int = 0o644) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)  # explicit: mkstemp makes 0600 and umask must not matter
            os.fsync(f.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    _fsync_dir(path.parent)


def remove(path: Path, *, prune_up_to: Path | None = None) -> None:
    """Remove a file, then its parent directories while empty (our `<name>.network.d/`), stopping
    at prune_up_to, which itself is kept."""
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    parent = path.parent
    while prune_up_to is not None and parent != prune_up_to and prune_up_to in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break  # not empty: somebody else's drop-ins live there too
        parent = parent.parent
