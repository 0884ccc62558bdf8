"""Watch a namespace's IPv6 proxy neighbour table, and stream echoes at a container, from this
process: what "no moment without the entry" and "no packet lost" are measured with.

The kernel sends no netlink notification when a proxy entry is added or deleted (`ip -6 monitor
neigh` shows nothing for them; checked on this machine's 6.18), so ProxyTable dumps the table
(RTM_GETNEIGH with NTF_PROXY) in a tight loop over one netlink socket opened inside the
namespace: a sample every ~0.1 ms, no process start in between. EchoStream sends an ICMPv6
echo every `interval` from a LAN neighbour's namespace (lanping's raw socket) and counts the
replies, however late, so a loaded machine makes it slower, never lossier.
"""

from __future__ import annotations

import ctypes
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path

from .lanping import ECHO_REPLY, ECHO_REQUEST, _socket_in

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NTF_PROXY = 0x08
NDA_DST = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _netlink_in(netns_pid: int) -> socket.socket:
    made: list[socket.socket | BaseException] = []

    def inside() -> None:
        # As lanping: setns on a thread of its own; the socket keeps the namespace.
        try:
            with Path(f"/proc/{netns_pid}/ns/net").open("rb") as ns:
                if _libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into the netns of {netns_pid}")
            made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE))
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=inside)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def _proxy_dump(sock: socket.socket, seq: int) -> set[tuple[int, IPv6Address]]:
    """(ifindex, address) of every IPv6 proxy entry of the socket's namespace."""
    ndmsg = struct.pack("=BxxxiHBB", socket.AF_INET6, 0, 0, NTF_PROXY, 0)
    header = struct.pack(
        "=IHHII", 16 + len(ndmsg), RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    sock.send(header + ndmsg)
    found: set[tuple[int, IPv6Address]] = set()
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _, msg_seq, _ = struct.unpack_from("=IHHII", data, offset)
            if length < 16:
                raise OSError(f"netlink message of length {length}")
            if msg_seq == seq and kind == NLMSG_DONE:
                return found
            if msg_seq == seq and kind == NLMSG_ERROR:
                (errno,) = struct.unpack_from("=i", data, offset + 16)
                raise OSError(-errno, "RTM_GETNEIGH dump of proxy entries")
            if msg_seq == seq and kind == RTM_NEWNEIGH:
                _, ifindex, _, _, _ = struct.unpack_from("=BxxxiHBB", data, offset + 16)
                attr = offset + 16 + 12
                while attr + 4 <= offset + length:
                    alen, atype = struct.unpack_from("=HH", data, attr)
                    if alen < 4:
                        break
                    if atype == NDA_DST and alen == 4 + 16:
                        found.add((ifindex, IPv6Address(data[attr + 4 : attr + 20])))
                    attr += (alen + 3) & ~3
            offset += (length + 3) & ~3


@dataclass
class Gap:
    started: float  # monotonic time of the first sample without the address
    ended: float | None  # of the first sample with it again; None: still missing at the end


@dataclass
class ProxyTable:
    """Samples the proxy table of a namespace until stop(); gaps() says when `address` was
    missing from it."""

    netns_pid: int
    address: IPv6Address
    samples: int = 0
    _gaps: list[Gap] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self) -> ProxyTable:
        sock = _netlink_in(self.netns_pid)
        first = _proxy_dump(sock, 1)
        if self.address not in {a for _, a in first}:
            sock.close()
            raise AssertionError(f"{self.address} is not in the proxy table to begin with")
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def _run(self, sock: socket.socket) -> None:
        seq = 1
        try:
            while not self._stop.is_set():
                seq += 1
                present = self.address in {a for _, a in _proxy_dump(sock, seq)}
                now = time.monotonic()
                self.samples += 1
                open_gap = self._gaps[-1] if self._gaps and self._gaps[-1].ended is None else None
                if not present and open_gap is None:
                    self._gaps.append(Gap(now, None))
                elif present and open_gap is not None:
                    open_gap.ended = now
                time.sleep(0.0001)
        except BaseException as exc:
            self._error = exc
        finally:
            sock.close()

    def stop(self) -> list[Gap]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._error is not None:
            raise self._error
        return list(self._gaps)


class EchoStream:
    """Echo requests every `interval` from a LAN neighbour's namespace to one address."""

    def __init__(self, netns_pid: int, address: str, interval: float = 0.01) -> None:
        self._sock = _socket_in(netns_pid)
        self._target = IPv6Address(address)
        self._interval = interval
        self._ident = (id(self) >> 4) & 0xFFFF
        self.sent = 0
        self._replied: set[int] = set()
        self._stop = threading.Event()  # sending
        self._done = threading.Event()  # receiving
        self._threads = [
            threading.Thread(target=self._guard(self._send), daemon=True),
            threading.Thread(target=self._guard(self._receive), daemon=True),
        ]
        self._error: BaseException | None = None

    def _guard(self, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except BaseException as exc:
                self._error = exc

        return run

    def start(self) -> EchoStream:
        for t in self._threads:
            t.start()
        return self

    def _send(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            seq = self.sent & 0xFFFF
            packet = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, self._ident, seq) + b"v6gen"
            self._sock.sendto(packet, (str(self._target), 0))
            self.sent += 1
            next_at += self._interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _receive(self) -> None:
        while not self._done.is_set():
            if not select.select([self._sock], [], [], 0.05)[0]:
                continue
            data, source = self._sock.recvfrom(2048)
            if len(data) < 8 or IPv6Address(source[0].split("%")[0]) != self._target:
                continue
            kind, _, _, ident, seq = struct.unpack("!BBHHH", data[:8])
            if kind == ECHO_REPLY and ident == self._ident:
                self._replied.add(seq)

    def replied(self) -> int:
        return len(self._replied)

    def stop(self, grace: float = 2.0) -> tuple[int, list[int]]:
        """Stop sending, wait up to `grace` seconds for late replies (returning as soon as all
        came); (sent, sequence numbers never answered)."""
        self._stop.set()
        self._threads[0].join(timeout=30)
        deadline = time.monotonic() + grace
        while len(self._replied) < self.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        self._done.set()
        self._threads[1].join(timeout=30)
        self._sock.close()
        if self._error is not None:
            raise self._error
        return self.sent, [s for s in range(self.sent) if s & 0xFFFF not in self._replied]
