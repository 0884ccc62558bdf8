"""/var/lib/v6gen/state.json: which kernel proxy entries v6gen added (so it deletes only those)
and the proxy_delay and host-wide sysctl values it replaced (so `clean` can put them back)."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from v6gen import fsutil, validate
from v6gen.errors import ApplyError
from v6gen.paths import Paths
from v6gen.ports import ProxyKey

FORMAT = 1
# Host-wide sysctls whose value before v6gen is kept, to be put back (format 1 readers that
# predate the key simply ignore it).
RESTORED_SYSCTLS = frozenset({"net/ipv6/conf/all/proxy_ndp"})


@dataclass(frozen=True)
class State:
    owned: frozenset[ProxyKey] = frozenset()
    saved_proxy_delay: dict[str, str] = field(default_factory=dict)
    saved_sysctls: dict[str, str] = field(default_factory=dict)  # key -> value before v6gen

    def to_json(self) -> str:
        by_uplink: dict[str, list[str]] = {}
        for dev, addr in sorted(self.owned):
            by_uplink.setdefault(dev, []).append(str(addr))
        doc = {
            "format": FORMAT,
            "generated_by": "v6gen",
            "owned_proxy_entries": by_uplink,
            "saved_proxy_delay": dict(sorted(self.saved_proxy_delay.items())),
            "saved_sysctls": dict(sorted(self.saved_sysctls.items())),
        }
        return json.dumps(doc, indent=2) + "\n"


def _parse(text: str) -> State:
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("unknown format")
    owned: set[ProxyKey] = set()
    for dev, addrs in dict(doc.get("owned_proxy_entries", {})).items():
        if validate.interface_name(dev) or not isinstance(addrs, list):
            raise ValueError(f"bad uplink {dev!r}")
        for a in addrs:
            addr, why = validate.parse_address(str(a))
            if addr is None:
                raise ValueError(f"{a!r} {why}")
            owned.add((dev, addr))
    saved = {
        str(k): str(v)
        for k, v in dict(doc.get("saved_proxy_delay", {})).items()
        if not validate.interface_name(str(k)) and str(v).isdigit()
    }
    sysctls = {
        str(k): str(v)
        for k, v in dict(doc.get("saved_sysctls", {})).items()
        if str(k) in RESTORED_SYSCTLS and str(v).isdigit()
    }
    return State(frozenset(owned), saved, sysctls)


def _trusted(st: os.stat_result) -> bool:
    """A regular file (not a symlink) of this user's that nobody else may write."""
    return stat.S_ISREG(st.st_mode) and not st.st_mode & 0o022 and st.st_uid == os.geteuid()


def _restore_file_entries(directory: Path) -> frozenset[ProxyKey]:
    """Fallback ownership record: the restore files list exactly what v6gen put in the kernel.
    Only files as trustworthy as the state itself would have to be count."""
    found: set[ProxyKey] = set()
    for path in directory.glob("*.proxy"):
        try:
            if not _trusted(path.lstat()):
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 6 and parts[:3] == ["neigh", "replace", "proxy"] and parts[4] == "dev":
                with_addr, _ = validate.parse_address(parts[3])
                if with_addr is not None and not validate.interface_name(parts[5]):
                    found.add((parts[5], with_addr))
    return frozenset(found)


def load(path: Path, restore_dir: Path) -> tuple[State, list[str]]:
    """The state, plus warnings. A missing state is an empty one; a damaged or untrustworthy one
    is replaced by what the restore files say, so ownership is never invented from thin air."""
    try:
        st = path.lstat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return State(), []
    except (OSError, UnicodeDecodeError) as exc:
        return State(_restore_file_entries(restore_dir)), [f"cannot read {path}: {exc}"]
    if not _trusted(st):
        return State(_restore_file_entries(restore_dir)), [
            f"ignoring {path}: not a regular file owned by this user and writable only by it"
        ]
    try:
        return _parse(text), []
    except (ValueError, TypeError, AttributeError) as exc:
        return State(_restore_file_entries(restore_dir)), [f"ignoring damaged {path}: {exc}"]


def save(path: Path, state: State) -> None:
    try:
        fsutil.write_atomic(path, state.to_json(), mode=0o644)
    except OSError as exc:
        raise ApplyError(
            f"cannot write {path}: {exc.strerror}",
            "v6gen keeps its state there: check that it is a writable regular file on a file "
            "system that is not full",
        ) from None


def owned(paths: Paths) -> frozenset[ProxyKey]:
    """The proxy entries v6gen owns, for reports (status, doctor); warnings are sync's job."""
    return load(paths.state_file, paths.restore_dir)[0].owned
