"""Shared helpers: statistics, a minimal rtnetlink reader for proxy neighbour entries (the kernel
sends no notifications for them, so they are polled with dumps), and namespace plumbing."""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import os
import platform
import re
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import REPO

# ----- statistics ------------------------------------------------------------------------------


def pct(values: Iterable[float], p: float) -> float:
    """Percentile by linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: Iterable[float]) -> float:
    xs = list(values)
    return statistics.median(xs) if xs else float("nan")


def rnd(x: float, digits: int = 3) -> float:
    return round(x, digits)


def summary(values: list[float], digits: int = 3) -> dict[str, Any]:
    """min/p50/p95/max/n plus the raw samples, for results.json."""
    return {
        "n": len(values),
        "min": rnd(min(values), digits) if values else None,
        "p50": rnd(pct(values, 50), digits) if values else None,
        "p95": rnd(pct(values, 95), digits) if values else None,
        "max": rnd(max(values), digits) if values else None,
        "samples": [rnd(v, digits) for v in values],
    }


# ----- results -------------------------------------------------------------------------------


@dataclass
class Section:
    """What one measurement module returns: flat metrics, extra detail and table notes."""

    metrics: dict[str, float | int | None] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----- timed processes -----------------------------------------------------------------------


def timed_run(
    argv: list[str],
    *,
    bound: float,
    input: str | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run argv; (result, wall seconds from just before the fork to the reaped exit).

    Not subprocess.run(timeout=...): with a timeout, Popen waits by polling waitpid with
    sleeps that double up to 50 ms, which rounds every measured duration up to that schedule
    (measured here: `python -c pass` 9 ms came out as 15.6 ms). This waits with a blocking
    waitpid and enforces `bound` with a timer that kills the process instead."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    killed = threading.Event()

    def kill() -> None:
        killed.set()
        proc.kill()

    timer = threading.Timer(bound, kill)
    timer.start()
    try:
        out, err = proc.communicate(input)
        took = time.perf_counter() - t0
    finally:
        timer.cancel()
    if killed.is_set():
        raise TimeoutError(f"{argv[:8]} still running after {bound} s: killed")
    res = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{argv} exit {proc.returncode}\n{out[-2000:]}\n{err[-2000:]}")
    return res, took


# ----- namespaces ----------------------------------------------------------------------------

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_setns_lock = threading.Lock()


@contextlib.contextmanager
def in_netns(pid: int) -> Iterator[None]:
    """Run the body with the calling thread in the network namespace of `pid`; sockets created
    inside stay in that namespace after the thread switches back."""
    with _setns_lock:
        own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into net namespace of {pid}: {os.strerror(err)}")
            try:
                yield
            finally:
                if _libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - fatal
                    raise OSError(ctypes.get_errno(), "setns back failed")
        finally:
            os.close(own)
            os.close(target)


def nsenter(pid: int, *, mount: bool = True) -> list[str]:
    return ["nsenter", "-t", str(pid), "-n", *(["-m"] if mount else []), "--"]


# ----- rtnetlink -----------------------------------------------------------------------------

NETLINK_ROUTE = 0
RTM_NEWNEIGH = 28
RTM_GETNEIGH = 30
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
NTF_PROXY = 0x08
NDA_DST = 1
_NLMSG = struct.Struct("=IHHII")
_NDMSG = struct.Struct("=BBHiHBB")
_RTA = struct.Struct("=HH")


def _errno(data: bytes, off: int) -> int:
    """The (negative) error of the NLMSG_ERROR message at off; 0 is an acknowledgement."""
    (err,) = struct.unpack_from("=i", data, off + _NLMSG.size)
    return int(err)


class ProxyTable:
    """Dumps the proxy neighbour table of one network namespace over rtnetlink, the same
    request `ip -6 neigh show proxy` sends, without starting a process (~0.1 ms for a few
    entries, ~2 ms for 1,000)."""

    def __init__(self, netns_pid: int) -> None:
        with in_netns(netns_pid):
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self._sock.bind((0, 0))
        self._sock.settimeout(5)  # the kernel answers in microseconds: a lost answer is an error
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ProxyTable:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def entries(self) -> set[tuple[int, str]]:
        """{(ifindex, address)} of every IPv6 proxy entry."""
        self._seq += 1
        body = _NDMSG.pack(socket.AF_INET6, 0, 0, 0, 0, NTF_PROXY, 0)
        hdr = _NLMSG.pack(_NLMSG.size + len(body), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP,
                          self._seq, 0)  # fmt: skip
        self._sock.send(hdr + body)
        found: set[tuple[int, str]] = set()
        for mtype, data, off, length in self._replies(1 << 20):
            if mtype == NLMSG_DONE:
                return found
            if mtype == NLMSG_ERROR:
                if err := _errno(data, off):
                    raise OSError(-err, "netlink neighbour dump failed")
                return found
            if mtype == RTM_NEWNEIGH:
                self._parse(data, off, length, found)
        raise AssertionError("unreachable")  # _replies never ends

    def _replies(self, bufsize: int) -> Iterator[tuple[int, bytes, int, int]]:
        """(type, buffer, offset, length) of each message answering the last request."""
        while True:
            data = self._sock.recv(bufsize)
            off = 0
            while off + _NLMSG.size <= len(data):
                length, mtype, _flags, seq, _pid = _NLMSG.unpack_from(data, off)
                if length < _NLMSG.size:
                    break
                if seq == self._seq:
                    yield mtype, data, off, length
                off += (length + 3) & ~3

    @staticmethod
    def _parse(data: bytes, off: int, length: int, found: set[tuple[int, str]]) -> None:
        _fam, _p1, _p2, ifindex, _state, flags, _type = _NDMSG.unpack_from(data, off + _NLMSG.size)
        if not flags & NTF_PROXY:
            return
        a = off + _NLMSG.size + _NDMSG.size
        end = off + length
        while a + _RTA.size <= end:
            rlen, rtype = _RTA.unpack_from(data, a)
            if rlen < _RTA.size:
                return
            if rtype == NDA_DST and rlen - _RTA.size == 16:
                found.add((ifindex, socket.inet_ntop(socket.AF_INET6, data[a + 4 : a + 20])))
            a += (rlen + 3) & ~3

    def present(self, ifindex: int, address: str) -> bool:
        """Whether one proxy entry exists: a single-entry RTM_GETNEIGH (the kernel looks up the
        one entry), so polling with it neither burns a CPU parsing dumps nor holds the table's
        lock against the writer being timed, as a full dump of 1,000 entries does."""
        self._seq += 1
        dst = socket.inet_pton(socket.AF_INET6, address)
        body = _NDMSG.pack(socket.AF_INET6, 0, 0, ifindex, 0, NTF_PROXY, 0)
        body += _RTA.pack(_RTA.size + len(dst), NDA_DST) + dst
        hdr = _NLMSG.pack(_NLMSG.size + len(body), RTM_GETNEIGH, NLM_F_REQUEST, self._seq, 0)
        self._sock.send(hdr + body)
        for mtype, data, off, _length in self._replies(1 << 16):
            if mtype == RTM_NEWNEIGH:
                return True
            if mtype == NLMSG_ERROR:
                err = _errno(data, off)
                if err == -errno.ENOENT:
                    return False
                raise OSError(-err, "netlink neighbour lookup failed")
        raise AssertionError("unreachable")

    def count(self, ifindex: int) -> int:
        return sum(1 for i, _ in self.entries() if i == ifindex)

    def has(self, ifindex: int, address: str) -> bool:
        return (ifindex, address) in self.entries()

    def wait(
        self, cond: Callable[[set[tuple[int, str]]], bool], timeout: float, interval: float = 0.001
    ) -> float | None:
        """perf_counter() of the first dump for which cond holds, or None after `timeout`."""
        deadline = time.perf_counter() + timeout
        while True:
            entries = self.entries()
            now = time.perf_counter()
            if cond(entries):
                return now
            if now > deadline:
                return None
            time.sleep(interval)


def ifindex(netns_pid: int, name: str) -> int:
    """ifindex of `name` inside the namespace (sysfs there is read through a process in it
    only when the mount namespace matches; ask `ip` instead)."""
    out = subprocess.run(
        [*nsenter(netns_pid, mount=False), "ip", "-o", "link", "show", "dev", name],
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout  # fmt: skip
    return int(out.split(":", 1)[0])


# ----- machine -------------------------------------------------------------------------------


def _first_line(argv: list[str], env: dict[str, str] | None = None) -> str | None:
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=10, check=False,
            env={**os.environ, **env} if env else None,
        )  # fmt: skip
    except OSError:
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _dpkg_version(pkg: str) -> str | None:
    v = _first_line(["dpkg-query", "-W", "-f=${Version}", pkg])
    return v or None


def machine() -> dict[str, Any]:
    cpu = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from tests.lab import packages

    # 247's networkd takes no --version; the lab extracts exactly this Debian package.
    nd247 = "systemd 247 (" + packages.NETWORKD_247.split("=", 1)[1] + ")"
    sdk = None
    with contextlib.suppress(Exception):
        import importlib.metadata as md

        sdk = md.version("docker")
    mem_kb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1) if mem_kb else None,
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "iproute2": _first_line(["ip", "-V"]),
        "systemd_networkd_252": _first_line(["/lib/systemd/systemd-networkd", "--version"]),
        "systemd_networkd_247": nd247,
        "networkd_dispatcher": _dpkg_version("networkd-dispatcher"),
        "dockerd": _dpkg_version("docker.io"),
        "docker_compose": _dpkg_version("docker-compose"),
        "docker_sdk_python": sdk,
        "ndppd": _dpkg_version("ndppd"),
        "busybox": _dpkg_version("busybox-static"),
        "git_commit": _first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        # Uncommitted changes are measured too: list them so a number can be traced.
        "git_uncommitted": subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.splitlines()[:20],
    }


PING_TIME = re.compile(r"time=([0-9.]+) ms")
