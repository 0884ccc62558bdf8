"""The host's firewalls, read with their own tools and replayed in a private network namespace
(v6gen.pathprobe, a child process of its own: it needs CAP_SYS_ADMIN for the namespace and
AF_PACKET sockets, and nothing of it stays behind).

Replays are cached per ruleset and target: a sync whose rules and containers did not change
reads the rules (three short processes) and asks nothing else; a new container is probed alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from v6gen.gatekeepers import Ruleset

_SBIN = "/usr/sbin:/sbin"
_TIMEOUT = 20.0  # bounds a hung tool; a replay of 1,000 addresses takes well under a second
_CACHE_LIMIT = 64  # rulesets remembered per process (a host's rules change rarely)
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

    def __init__(self, cache_file: Path | None = None) -> None:
        self._cache: dict[str, dict[str, dict[str, Any]]] = {}
        self._file = cache_file
        if cache_file is not None:
            try:
                loaded = json.loads(cache_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                loaded = {}
            if isinstance(loaded, dict):
                self._cache.update({k: v for k, v in loaded.items() if isinstance(v, dict)})

    def ruleset(self) -> Ruleset:
        texts: dict[str, str] = {}
        unread: list[str] = []
        for key, argv in _TOOLS:
            path = _which(argv[0])
            if path is None:
                continue  # not installed: nobody wrote rules with it
            try:
                done = subprocess.run(
                    [path, *argv[1:]], capture_output=True, text=True, timeout=_TIMEOUT, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                unread.append(f"{' '.join(argv)}: {exc}")
                continue
            if done.returncode != 0:
                unread.append(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
                continue
            texts[key] = done.stdout
        return Ruleset(
            texts.get("legacy", ""),
            texts.get("iptables_nft", ""),
            texts.get("nft", ""),
            tuple(unread),
        )

    def bridges(self, addresses: Iterable[IPv6Address]) -> dict[IPv6Address, str]:
        """One `ip -6 route show` for all of them: the longest matching prefix's device."""
        try:
            done = subprocess.run(
                ["ip", "-json", "-6", "route", "show", "table", "main"],
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                check=False,
            )
            routes = json.loads(done.stdout or "[]")
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return {}
        table: list[tuple[IPv6Network, str]] = []
        for r in routes if isinstance(routes, list) else []:
            dst, dev = r.get("dst"), r.get("dev")
            if isinstance(dst, str) and isinstance(dev, str) and dst != "default":
                with contextlib.suppress(ValueError):
                    table.append((IPv6Network(dst, strict=False), dev))
        table.sort(key=lambda route: -route[0].prefixlen)
        found: dict[IPv6Address, str] = {}
        for address in addresses:
            dev = next((d for net, d in table if address in net), None)
            if dev is not None:
                found[address] = dev
        return found

    def replay(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """pathprobe's answer to `request` ({"rounds": {name: {"passed": [[i, probe], ...]}}}
        or {name: {"error": ...}}), from the cache for the targets it has seen."""
        setup = {k: v for k, v in request.items() if k != "targets"}
        key = hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()
        known = self._cache.setdefault(key, {})
        targets = list(request["targets"])
        names = [json.dumps(t, sort_keys=True) for t in targets]
        new = [t for t, n in zip(targets, names, strict=True) if n not in known]
        if new:
            answer = self._run({**setup, "targets": new})
            if any("error" in result for result in answer.values()):
                # Not cached: a failure may pass (a tool missing for a moment, a timeout).
                full = answer if len(new) == len(targets) else self._run(dict(request))
                return {"rounds": full}
            for j, t in enumerate(new):
                known[json.dumps(t, sort_keys=True)] = {
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
        if self._file is None:
            return
        tmp = self._file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({key: self._cache[key]}), encoding="utf-8")
            tmp.replace(self._file)
        except OSError:
            pass  # a cache only: the next run replays again

    def _run(self, request: Mapping[str, Any]) -> dict[str, Any]:
        src = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        env["PATH"] = env.get("PATH", "/usr/bin:/bin") + os.pathsep + _SBIN
        try:
            done = subprocess.run(
                [sys.executable, "-m", "v6gen.pathprobe"],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                timeout=_TIMEOUT,
                env=env,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return _failed(request, f"the replay did not run: {exc}")
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [str(done.returncode)])[-1]
            return _failed(request, f"the replay failed: {last}")
        try:
            rounds = json.loads(done.stdout)["rounds"]
        except (ValueError, KeyError, TypeError):
            return _failed(request, "the replay printed no answer")
        return dict(rounds)


def _failed(request: Mapping[str, Any], why: str) -> dict[str, Any]:
    return {r["name"]: {"error": why} for r in request["rounds"]}
