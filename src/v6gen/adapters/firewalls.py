"""The host's firewalls, read with their own tools and replayed in a private network namespace
(v6gen.pathprobe, a child process of its own: it needs CAP_SYS_ADMIN for the namespace and
AF_PACKET sockets, and nothing of it stays behind). Where this process may not make a namespace
(v6gen.service's sandbox), the replay is asked of v6gen-replay.socket, whose service runs
pathprobe with a sandbox of its own (the Debian package ships both).

Replays are cached per ruleset and target: a sync whose rules and containers did not change
reads the rules (three short processes) and asks nothing else; a new container is probed alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from v6gen.gatekeepers import Ruleset, normalize

_SBIN = "/usr/sbin:/sbin"
_TIMEOUT = 20.0  # bounds a hung tool; a replay of 1,000 addresses takes well under a second
_LEGACY_TABLES = Path("/proc/net/ip6_tables_names")  # tables of the legacy ip6_tables module
_ROUTES = Path("/proc/net/ipv6_route")
_RTF_LOCAL, _RTF_ANYCAST = 0x80000000, 0x00100000  # include/uapi/linux/ipv6_route.h
_CACHE_LIMIT = 64  # rulesets remembered per process (a host's rules change rarely)
# Where v6gen-replay.socket listens (debian/v6gen.v6gen-replay.socket).
REPLAY_SOCKET = Path("/run/v6gen-replay.sock")
_TOOLS = (
    ("legacy", ["ip6tables-legacy-save"]),
    ("iptables_nft", ["ip6tables-nft-save"]),
    ("nft", ["nft", "list", "ruleset"]),
)


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path=_SBIN)


class HostFirewalls:
    """`cache_file` keeps the last ruleset's answers across runs (a CLI sync is a new process
    each time); None keeps them in memory only."""

    def __init__(self, cache_file: Path | None = None, replay_socket: Path = REPLAY_SOCKET) -> None:
        self._socket = replay_socket
        self._via_socket = False  # this process may not replay itself: ask the socket
        self._cache: dict[str, dict[str, dict[str, Any]]] = {}
        self._file = cache_file
        self._loaded = cache_file is None  # the file is read only when a replay needs it
        self._verdicts: dict[str, dict[str, Any]] = {}
        self._unable = ""  # why this process can't replay at all, once found out

    def _load_cache(self) -> None:
        if self._loaded or self._file is None:
            return
        self._loaded = True
        try:
            loaded = json.loads(self._file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(loaded, dict):
            self._cache.update({k: v for k, v in loaded.items() if isinstance(v, dict)})

    def ruleset(self) -> Ruleset:
        """`nft list ruleset` (which shows ip6tables-nft's tables too: enough to tell a change)
        and, when the legacy ip6_tables module holds tables, ip6tables-legacy-save. A sync
        whose rules did not change runs one process here."""
        legacy_loaded = _legacy_loaded()
        texts: dict[str, str] = {}
        unread: list[str] = []
        for key, argv in _TOOLS:
            if key == "legacy" and not legacy_loaded:
                continue
            if key == "iptables_nft" and _which("nft") is not None:
                continue  # read only when a replay needs it: iptables_nft()
            text, error = _save(argv)
            if error:
                unread.append(error)
            elif text is not None:
                texts[key] = text
        return Ruleset(
            texts.get("legacy", ""),
            texts.get("iptables_nft", ""),
            texts.get("nft", ""),
            tuple(unread),
        )

    def legacy(self) -> str:
        """ip6tables-legacy's rules ("" while the legacy module holds no table: nothing is
        started then, and nothing loads the module)."""
        if not _legacy_loaded():
            return ""
        text, error = _save(["ip6tables-legacy-save"])
        return text if text is not None else error

    def iptables_nft(self) -> str:
        text, _ = _save(["ip6tables-nft-save"])
        return text or ""

    def routes(self) -> str:
        """The kernel's IPv6 routes that can lead to a container, one "destination
        prefix-length device" line each (from /proc/net/ipv6_route, without its changing use
        counts): no process to start. Left out: local and anycast routes (enabling forwarding
        adds anycast ones, which must not read as a new path), multicast, link-local, lo."""
        lines = []
        for line in _read(_ROUTES).splitlines():
            f = line.split()
            if len(f) != 10 or f[9] == "lo" or f[0].startswith(("ff", "fe8", "fe9", "fea", "feb")):
                continue
            if int(f[8], 16) & (_RTF_LOCAL | _RTF_ANYCAST):
                continue
            lines.append(f"{f[0]} {f[1]} {f[9]}")
        return "\n".join(sorted(lines))

    def recall(self, key: str) -> dict[str, Any] | None:
        """The verdicts stored under `key` by remember(), here or by an earlier run."""
        found = self._verdicts.get(key)
        if found is None and self._file is not None:
            try:
                stored = json.loads(self._file.with_suffix(".verdicts").read_text("utf-8"))
            except (OSError, ValueError):
                return None
            if isinstance(stored, dict) and stored.get("key") == key:
                found = stored.get("data")
        return found if isinstance(found, dict) else None

    def remember(self, key: str, data: dict[str, Any]) -> None:
        self._verdicts = {key: data}
        if self._file is not None:
            _write(self._file.with_suffix(".verdicts"), json.dumps({"key": key, "data": data}))

    def replay(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """pathprobe's answer to `request` ({"rounds": {name: {"passed": [[i, probe], ...]}}}
        or {name: {"error": ...}}), from the cache for the targets it has seen."""
        setup = {k: v for k, v in request.items() if k != "targets"}
        key = hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()
        self._load_cache()
        known = self._cache.setdefault(key, {})
        targets = list(request["targets"])
        names = [_target_key(t) for t in targets]
        new = [t for t, n in zip(targets, names, strict=True) if n not in known]
        if new:
            answer = self._run({**setup, "targets": new})
            if any("error" in result for result in answer.values()):
                # Not cached: a failure may pass (a tool missing for a moment, a timeout).
                full = answer if len(new) == len(targets) else self._run(dict(request))
                return {"rounds": full}
            for j, t in enumerate(new):
                known[_target_key(t)] = {
                    rnd: [p for i, p in result["passed"] if i == j]
                    for rnd, result in answer.items()
                }
            while len(self._cache) > _CACHE_LIMIT:
                del self._cache[next(iter(self._cache))]
            self._save(key)
        rounds: dict[str, Any] = {}
        for i, name in enumerate(names):
            for rnd, seen in known[name].items():
                rounds.setdefault(rnd, {"passed": []})["passed"] += [[i, p] for p in seen]
        return {"rounds": rounds}

    def _save(self, key: str) -> None:
        """Only the current ruleset's answers: the file stays the size of one host's probes."""
        if self._file is not None:
            _write(self._file, json.dumps({key: self._cache[key]}))

    def _run(self, request: Mapping[str, Any]) -> dict[str, Any]:
        if self._via_socket:
            return self._ask_socket(request)
        if self._unable:
            return _failed(request, self._unable)
        # This v6gen's own modules, and never the working directory's (-P, cwd /): it runs as
        # root.
        src = str(Path(__file__).resolve().parents[2])
        path = [src, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        env["PATH"] = env.get("PATH", "/usr/bin:/bin") + os.pathsep + _SBIN
        try:
            done = subprocess.run(
                [sys.executable, "-P", "-m", "v6gen.pathprobe"],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                env=env,
                cwd="/",
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return _failed(request, f"the replay did not run: {exc}")
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [str(done.returncode)])[-1]
            rounds = _failed(request, f"the replay failed: {last}")
        else:
            rounds = _answer(done.stdout, request)
        refused = sorted(
            {str(r["error"]) for r in rounds.values() if "Errno 1" in r.get("error", "")}
        )
        if not refused:
            return rounds
        # Refused here: a sandbox such as v6gen.service's allows no namespace (nor pinning a
        # CPU). The packaged socket replays outside it, and is asked from then on; without it,
        # watch stops starting the helper for nothing. Other failures (a table that does not
        # load) would fail there the same way: not asked twice.
        if self._socket.is_socket():
            answer = self._ask_socket(request)
            if not any("error" in r for r in answer.values()):
                self._via_socket = True
                return answer
        self._unable = f"the replay is not allowed here: {refused[0]}"
        return rounds

    def _ask_socket(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The same replay by v6gen-replay@.service: the request, then end of input; the
        answer, then end of output."""
        chunks = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(_TIMEOUT)
                conn.connect(str(self._socket))
                conn.sendall(json.dumps(request).encode())
                conn.shutdown(socket.SHUT_WR)
                while data := conn.recv(1 << 16):
                    chunks.append(data)
        except OSError as exc:
            return _failed(request, f"the replay at {self._socket} did not answer: {exc}")
        return _answer(b"".join(chunks).decode(errors="replace"), request)


def _legacy_loaded() -> bool:
    """Whether the legacy ip6_tables module holds a table: only then has ip6tables-legacy rules
    (and running ip6tables-legacy-save would load the module otherwise)."""
    return bool(_read(_LEGACY_TABLES).strip())


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return ""


def _save(argv: list[str]) -> tuple[str | None, str]:
    """(the tool's normalized output, "") or (None, why it failed); (None, "") when the tool
    is not installed: nobody wrote rules with it."""
    path = _which(argv[0])
    if path is None:
        return None, ""
    try:
        done = subprocess.run(
            [path, *argv[1:]], capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{' '.join(argv)}: {exc}"
    if done.returncode != 0:
        return None, f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}"
    return normalize(done.stdout), ""


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # a cache only: the next run replays again


def _answer(text: str, request: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return dict(json.loads(text)["rounds"])
    except (ValueError, KeyError, TypeError):
        return _failed(request, "the replay printed no answer")


def _target_key(target: Mapping[str, Any]) -> str:
    ports = ",".join(str(p) for p in target["ports"])
    return f"{target['address']} {target['bridge']} {ports}"


def _failed(request: Mapping[str, Any], why: str) -> dict[str, Any]:
    return {r["name"]: {"error": why} for r in request["rounds"]}
