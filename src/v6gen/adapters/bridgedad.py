"""Ending DAD on the bridges v6gen serves (why: v6gen/bridges.py), over rtnetlink in this
process: the fast path calls it for a container's first network and must start no process.

A bridge holds the gateway of a served subnet when one of its addresses has that subnet's
prefix (Docker's and Podman's gateways do). On it: accept_dad=0, so addresses added later (the
kernel's link-local when the carrier comes) skip DAD; and every address still tentative, whose
DAD the kernel decided on when it was added, is deleted and added again `nodad` (prefix, scope
and other flags kept), in one datagram, so the gap is one netlink round trip. An address whose
DAD failed is left alone: something on the bridge does hold it.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from v6gen.adapters import netlink

RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFA_ADDRESS, IFA_FLAGS = 1, 8
IFA_F_NODAD, IFA_F_OPTIMISTIC, IFA_F_DADFAILED, IFA_F_TENTATIVE = 0x02, 0x04, 0x08, 0x40
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, ifindex
_U32 = struct.Struct("=I")


@dataclass(frozen=True)
class Address:
    index: int
    address: IPv6Address
    prefixlen: int
    scope: int
    flags: int

    @property
    def network(self) -> IPv6Network:
        return IPv6Network(f"{self.address}/{self.prefixlen}", strict=False)


def parse_address(payload: bytes) -> Address | None:
    """An RTM_NEWADDR of a dump; the 32-bit IFA_FLAGS where the kernel sends it."""
    if len(payload) < _IFADDRMSG.size:
        return None
    family, prefixlen, flags, scope, index = _IFADDRMSG.unpack_from(payload)
    if family != socket.AF_INET6:
        return None
    address = None
    for kind, value in _attributes(payload[_IFADDRMSG.size :]):
        if kind == IFA_ADDRESS and len(value) == 16:
            address = IPv6Address(value)
        elif kind == IFA_FLAGS and len(value) == 4:
            (flags,) = _U32.unpack(value)
    return None if address is None else Address(index, address, prefixlen, scope, flags)


def address_request(kind: int, flags: int, seq: int, a: Address, ifa_flags: int) -> bytes:
    body = _IFADDRMSG.pack(socket.AF_INET6, a.prefixlen, ifa_flags & 0xFF, a.scope, a.index)
    body += struct.pack("=HH", 4 + 16, IFA_ADDRESS) + a.address.packed
    body += struct.pack("=HH", 4 + 4, IFA_FLAGS) + _U32.pack(ifa_flags)
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def _attributes(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind, data[offset + 4 : offset + length]
        offset += (length + 3) & ~3


class BridgeDad:
    def __init__(self, proc_sys: Path = Path("/proc/sys")) -> None:
        self._proc_sys = proc_sys

    def end(self, subnets: Iterable[IPv6Network]) -> list[str]:
        """What it did, a line each (nothing when the bridges are settled already)."""
        wanted = set(subnets)
        if not wanted:
            return []
        addresses = self._dump()
        bridges = {a.index for a in addresses if a.network in wanted}
        done = [self._no_dad(index) for index in sorted(bridges)]
        tentative = [
            a
            for a in addresses
            if a.index in bridges and a.flags & IFA_F_TENTATIVE and not a.flags & IFA_F_DADFAILED
        ]
        if tentative:
            self._readd(tentative)
        done += [f"{_name(a.index)}: {a.address} no longer tentative" for a in tentative]
        return [line for line in done if line]

    def _no_dad(self, index: int) -> str:
        key = self._proc_sys / f"net/ipv6/conf/{_name(index)}/accept_dad"
        try:
            if key.read_text().strip() == "0":
                return ""
            key.write_text("0\n")
        except OSError as exc:
            raise netlink.fail(exc.errno or errno.EIO, f"cannot set {key}") from None
        return f"{_name(index)}: accept_dad=0"

    @staticmethod
    def _dump() -> list[Address]:
        body = _IFADDRMSG.pack(socket.AF_INET6, 0, 0, 0, 0)
        flags = netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP
        request = struct.pack("=IHHII", 16 + len(body), RTM_GETADDR, flags, 1, 0) + body
        with netlink.open_socket() as sock:
            answers = netlink.dump(sock, request, "cannot list the addresses")
            parsed = [parse_address(p) for kind, p in answers if kind == RTM_NEWADDR]
        return [a for a in parsed if a is not None]

    @staticmethod
    def _readd(tentative: list[Address]) -> None:
        ack = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK
        create = ack | netlink.NLM_F_CREATE | netlink.NLM_F_REPLACE
        data = b""
        for n, a in enumerate(tentative):
            keep = a.flags & ~(IFA_F_TENTATIVE | IFA_F_OPTIMISTIC | IFA_F_DADFAILED)
            data += address_request(RTM_DELADDR, ack, 2 * n + 1, a, a.flags)
            data += address_request(RTM_NEWADDR, create, 2 * n + 2, a, keep | IFA_F_NODAD)
        with netlink.open_socket() as sock:
            for seq, code in netlink.acks(sock, data, range(1, 2 * len(tentative) + 1)):
                if code:
                    a = tentative[(seq - 1) // 2]
                    what = f"cannot add {a.address} again without DAD on {_name(a.index)}"
                    raise netlink.fail(code, what)


def _name(index: int) -> str:
    return netlink.name_of(index) or f"interface {index}"
