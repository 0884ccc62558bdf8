"""IPv6 proxy neighbour entries over rtnetlink, in this process (no `ip` to start).

Why not pyroute2 (Debian's python3-pyroute2 0.7.2, PyPI 0.9.7): measured on this project's
machine, importing it and opening an IPRoute costs 190-490 ms and 24 MiB of resident memory
(370-420 modules), more than all of watch's own share of its memory; v6gen needs three
messages of one family, which take the ~150 lines below and no dependency.

The messages are what `ip -6 neigh replace|del proxy ADDR dev IF` and `ip -6 neigh show proxy`
send (iproute2's ipneigh.c): an ndmsg with NTF_PROXY and an NDA_DST attribute. The kernel keeps
proxy entries apart from neighbours (pneigh_lookup), answers their dump only when the request's
ndmsg carries NTF_PROXY, and sends no notification when they change.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from ipaddress import IPv6Address

from v6gen.errors import KernelError

ProxyKey = tuple[str, IPv6Address]  # as v6gen.ports has it (no import: ports pulls in the model)

NETLINK_ROUTE = 0
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
NTF_PROXY = 0x08
NUD_PERMANENT = 0x80  # what iproute2 sends; the kernel ignores the state of a proxy entry
NDA_DST = 1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
_ATTR = struct.Struct("=HH")
# Acks of successful requests are 36 bytes; this many requests per send keep their acks well
# inside the default receive buffer (212 KiB), so no ack is dropped for want of room.
_CHUNK = 256
_TIMEOUT = 5.0  # the kernel answers at once; this only bounds a hang

_HINTS = {
    errno.EPERM: "changing proxy entries needs CAP_NET_ADMIN: run v6gen as root",
    errno.EACCES: "changing proxy entries needs CAP_NET_ADMIN: run v6gen as root",
    errno.ENODEV: "the interface is gone: check `ip link`, then run `v6gen sync` again",
    errno.EAFNOSUPPORT: "netlink sockets are refused here: allow AF_NETLINK "
    "(RestrictAddressFamilies= of the unit)",
}


def neigh_request(kind: int, flags: int, seq: int, ifindex: int, address: IPv6Address) -> bytes:
    """One RTM_*NEIGH message for the proxy entry of `address` on interface `ifindex`."""
    body = _NDMSG.pack(socket.AF_INET6, ifindex, NUD_PERMANENT, NTF_PROXY, 0)
    body += _ATTR.pack(_ATTR.size + 16, NDA_DST) + address.packed
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, seq, 0) + body


def dump_request(seq: int) -> bytes:
    body = _NDMSG.pack(socket.AF_INET6, 0, 0, NTF_PROXY, 0)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _HEADER.pack(_HEADER.size + len(body), RTM_GETNEIGH, flags, seq, 0) + body


def messages(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, seq, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, kind, _, seq, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size or offset + length > len(data):
            raise KernelError(f"netlink: a message of length {length} in {len(data)} bytes", "")
        yield kind, seq, data[offset + _HEADER.size : offset + length]
        offset += (length + 3) & ~3


def proxy_entry(payload: bytes) -> tuple[int, IPv6Address] | None:
    """(ifindex, address) of an RTM_NEWNEIGH of a dump; None for anything else."""
    if len(payload) < _NDMSG.size:
        return None
    family, ifindex, _, flags, _ = _NDMSG.unpack_from(payload)
    if family != socket.AF_INET6 or not flags & NTF_PROXY:
        return None
    offset = _NDMSG.size
    while offset + _ATTR.size <= len(payload):
        length, kind = _ATTR.unpack_from(payload, offset)
        if length < _ATTR.size:
            break
        if kind == NDA_DST and length == _ATTR.size + 16:
            start = offset + _ATTR.size
            return ifindex, IPv6Address(payload[start : start + 16])
        offset += (length + 3) & ~3
    return None


def error_code(payload: bytes) -> int:
    """The positive errno of an NLMSG_ERROR (0: an ack)."""
    (code,) = struct.unpack_from("=i", payload)
    return int(-code)


def fail(code: int, what: str) -> KernelError:
    return KernelError(f"{what}: {os.strerror(code)}", _HINTS.get(code, ""))


def open_socket() -> socket.socket:
    """A fresh socket per call: nothing goes stale across a namespace change or a fork."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    except OSError as exc:
        raise fail(exc.errno or errno.EIO, "cannot open a netlink socket") from None
    sock.settimeout(_TIMEOUT)
    return sock


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except OSError as exc:  # a timeout included
        code = exc.errno or errno.ETIMEDOUT
        raise fail(code, "no answer from the kernel over netlink") from None


def dump(sock: socket.socket, request: bytes, what: str) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each answer to a dump `request` sent with sequence number 1."""
    sock.send(request)
    while True:
        for kind, seq, payload in messages(_recv(sock)):
            if seq != 1:
                continue
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                raise fail(error_code(payload), what)
            yield kind, payload


def acks(sock: socket.socket, data: bytes, sequence: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Send requests (each with NLM_F_ACK) and yield (seq, errno) of each answer, 0 for done."""
    pending = set(sequence)
    if data:
        sock.send(data)
    while pending:
        for kind, seq, payload in messages(_recv(sock)):
            if kind == NLMSG_ERROR and seq in pending:
                pending.discard(seq)
                yield seq, error_code(payload)


class ProxyTable:
    """The kernel's IPv6 proxy entries of this process's network namespace."""

    def entries(self) -> set[ProxyKey]:
        with open_socket() as sock:
            answers = dump(sock, dump_request(1), "cannot list the proxy entries")
            parsed = [proxy_entry(p) for kind, p in answers if kind == RTM_NEWNEIGH]
        # An entry for every interface (ifindex 0) is someone else's: v6gen never makes one.
        # An interface gone since the dump has no entries left.
        dumped = [e for e in parsed if e is not None and e[0] != 0]
        names = {index: name_of(index) for index in {i for i, _ in dumped}}
        return {(name, a) for i, a in dumped if (name := names[i]) is not None}

    def change(self, add: Iterable[ProxyKey], delete: Iterable[ProxyKey]) -> None:
        """Delete, then add (replace: idempotent). Every request is made even when one fails,
        as `ip -force -batch` did; a delete of an entry already gone is no failure. Raises the
        first failure, with how many there were."""
        # Unsorted: sorting IPv6Address pairs costs more than the kernel's work for them.
        requests = [(RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, k) for k in set(delete)]
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        requests += [(RTM_NEWNEIGH, flags, k) for k in set(add)]
        failures: list[KernelError] = []
        indexes = {dev: _index(dev) for dev in {dev for _, _, (dev, _) in requests}}
        with open_socket() as sock:
            for start in range(0, len(requests), _CHUNK):
                chunk = requests[start : start + _CHUNK]
                failures += self._send(sock, chunk, start, indexes)
        if failures:
            first = failures[0]
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise KernelError(first.message + more, first.hint)

    @staticmethod
    def _send(
        sock: socket.socket,
        requests: list[tuple[int, int, ProxyKey]],
        base: int,
        indexes: dict[str, int | None],
    ) -> list[KernelError]:
        data, pending = b"", dict[int, tuple[int, str]]()
        failures: list[KernelError] = []
        for offset, (kind, flags, (dev, address)) in enumerate(requests):
            verb = "add" if kind == RTM_NEWNEIGH else "delete"
            what = f"cannot {verb} the proxy entry {address} dev {dev}"
            index = indexes[dev]
            if index is None:
                # A gone interface took its entries with it: only an add has failed.
                if kind == RTM_NEWNEIGH:
                    failures.append(fail(errno.ENODEV, what))
                continue
            seq = base + offset + 1
            data += neigh_request(kind, flags, seq, index, address)
            pending[seq] = (kind, what)
        for seq, code in acks(sock, data, pending):
            request, what = pending[seq]
            if code and not (request == RTM_DELNEIGH and code == errno.ENOENT):
                failures.append(fail(code, what))
        return failures


def _index(name: str) -> int | None:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def name_of(index: int) -> str | None:
    """The interface's name; None once it is gone."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return None
