"""The trust chain of the dispatcher hook (dispatcher-hooks/50-v6gen), in one place: the hook
replays an uplink's restore file only when it and every directory above it are root's and
writable by nobody else, and reads proxy_delay from v6gen's sysctl.d file only on the same
terms. `sync` keeps v6gen's own directories inside that chain (or refuses), and `doctor`
reports what the hook would refuse. The hook's shell code applies the same rules; the hook
tier tests both against the same trees.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from v6gen.paths import Paths

# The hook reads at most this much of a restore file (its MAX_BYTES).
MAX_BYTES = 16 * 1024 * 1024
ROOT_UID = 0


@dataclass(frozen=True)
class Link:
    """One path of the chain, what it must be, and whether v6gen made it (and may fix it)."""

    path: Path
    directory: bool
    own: bool
    # lstat (a symlink is refused) for what v6gen made; stat for system directories, which a
    # distribution may well make symlinks (the hook's "/var/lib/" with its trailing slash).
    follow: bool


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    return "a device or socket"


def problem(st: os.stat_result, directory: bool, owner: int = ROOT_UID) -> str:
    """Why the hook refuses a path with this stat, or "" (the hook's rules, in its order:
    a wrong type or size outranks the owner and mode)."""
    why = ""
    if st.st_uid != owner:
        why = f"owned by uid {st.st_uid}, not {'root' if owner == ROOT_UID else owner}"
    elif st.st_mode & 0o022:
        why = "writable by group or others"
    if directory and not stat.S_ISDIR(st.st_mode):
        why = f"{_kind(st.st_mode)}, not a directory"
    elif not directory:
        if not stat.S_ISREG(st.st_mode):
            why = f"{_kind(st.st_mode)}, not a regular file"
        elif st.st_size > MAX_BYTES:
            why = f"larger than {MAX_BYTES} bytes"
    return why


def _ancestors(path: Path, paths: Paths) -> list[Path]:
    """System directories above v6gen's own, up to (not including) the root: /var/lib, /var."""
    return [p for p in path.parents if p != paths.root and paths.root in p.parents]


def restore_chain(paths: Paths, uplink: str) -> list[Link]:
    """What the hook checks before it replays an uplink's restore file."""
    chain = [
        Link(paths.restore_file(uplink), directory=False, own=True, follow=False),
        Link(paths.restore_dir, directory=True, own=True, follow=False),
        Link(paths.state_dir, directory=True, own=True, follow=False),
    ]
    return chain + [Link(p, True, False, True) for p in _ancestors(paths.state_dir, paths)]


def sysctl_chain(paths: Paths) -> list[Link]:
    """What the hook checks before it reads proxy_delay from v6gen's sysctl.d file."""
    chain = [Link(paths.sysctl_dropin, directory=False, own=True, follow=False)]
    return chain + [Link(p, True, False, True) for p in _ancestors(paths.sysctl_dropin, paths)]


@dataclass(frozen=True)
class Finding:
    link: Link
    why: str
    mode: int  # the permission bits it has now

    @property
    def fixable(self) -> bool:
        """v6gen's own directory, of the right owner, only too open: sync tightens it."""
        return self.link.own and self.link.directory and self.why == "writable by group or others"


def check(chain: list[Link], owner: int = ROOT_UID) -> list[Finding]:
    """Every link the hook would refuse; missing ones are left out (sync creates them 0755)."""
    found = []
    for link in chain:
        try:
            st = link.path.stat() if link.follow else link.path.lstat()
        except FileNotFoundError:
            continue
        except OSError as exc:
            found.append(Finding(link, f"cannot be read: {exc.strerror}", 0))
            continue
        why = problem(st, link.directory, owner)
        if why:
            found.append(Finding(link, why, stat.S_IMODE(st.st_mode)))
    return found
