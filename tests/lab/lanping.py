"""One ICMPv6 echo from a LAN neighbour's namespace, sent and timed by this process.

A raw socket opened inside the neighbour's network namespace (setns on a short-lived thread;
the socket keeps the namespace it was made in) sends the echo the moment the caller asks, with
no process start in between, and notes when the reply comes: the time a LAN host that pings
at once waits for its first answer, Neighbour Discovery included. Root only.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import threading
import time
from ipaddress import IPv6Address
from pathlib import Path

CLONE_NEWNET = 0x40000000
ECHO_REQUEST, ECHO_REPLY = 128, 129
_libc = ctypes.CDLL(None, use_errno=True)


def _socket_in(netns_pid: int) -> socket.socket:
    made: list[socket.socket | BaseException] = []

    def inside() -> None:
        # Its own thread: setns changes only the calling thread's namespace, and this thread
        # ends right after, so no other code of this process runs in the neighbour's.
        try:
            with Path(f"/proc/{netns_pid}/ns/net").open("rb") as ns:
                if _libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into the net namespace of {netns_pid}")
            made.append(socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6))
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=inside)
    thread.start()
    thread.join()
    result = made[0]
    if isinstance(result, BaseException):
        raise result
    return result


class Pinger:
    def __init__(self, netns_pid: int) -> None:
        self._sock = _socket_in(netns_pid)
        self._ident = os.getpid() & 0xFFFF
        self._seq = 0

    def first_reply(self, address: str, timeout: float) -> float | None:
        """Send one echo request now; seconds until its reply arrived, None if none within
        `timeout`. The kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket."""
        self._seq = (self._seq + 1) & 0xFFFF
        target = IPv6Address(address)
        packet = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, self._ident, self._seq) + b"v6gen"
        while select.select([self._sock], [], [], 0)[0]:  # nothing left over from earlier
            self._sock.recv(2048)
        t0 = time.perf_counter()
        self._sock.sendto(packet, (str(target), 0))
        deadline = t0 + timeout
        while (left := deadline - time.perf_counter()) > 0:
            if not select.select([self._sock], [], [], left)[0]:
                break
            data, source = self._sock.recvfrom(2048)
            now = time.perf_counter()
            if len(data) < 8 or IPv6Address(source[0].split("%")[0]) != target:
                continue
            kind, _, _, ident, seq = struct.unpack("!BBHHH", data[:8])
            if kind == ECHO_REPLY and ident == self._ident and seq == self._seq:
                return now - t0
        return None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Pinger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
