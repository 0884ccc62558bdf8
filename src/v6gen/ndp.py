"""Neighbour Discovery packets v6gen sends and reads on an uplink: the Duplicate Address
Detection probe it asks the LAN with before it keeps an address (RFC 4862 §5.4.2), the
unsolicited Neighbour Advertisement it announces an address with (RFC 4861 §7.2.6), and the
advertisements that answer a probe. Pure: bytes in, bytes out; the sockets are in
adapters/ndpsock.py."""

from __future__ import annotations

import heapq
import struct
from dataclasses import dataclass, field
from ipaddress import IPv6Address

NS, NA = 135, 136
ICMPV6 = 58
HOP_LIMIT = 255  # RFC 4861 §7.1.2: a receiver drops ND messages that crossed a router
_SOURCE_LL, _TARGET_LL = 1, 2  # option types
_OVERRIDE, _SOLICITED, _ROUTER = 0x20, 0x40, 0x80  # first byte of an NA's flags
ALL_NODES = IPv6Address("ff02::1")
# RFC 4861 §7.2.6: up to MAX_NEIGHBOR_ADVERTISEMENT (3) unsolicited NAs, at least RetransTimer
# apart; its default, 1 s, is what every LAN host here uses (the uplink's own may differ).
REPEATS, RETRANS = 2, 1.0
UNSPECIFIED = IPv6Address("::")


def solicited_node(address: IPv6Address) -> IPv6Address:
    """ff02::1:ffXX:XXXX, the group whose members are asked about `address` (RFC 4291 §2.7.1)."""
    return IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + address.packed[13:])


def _checksum(source: IPv6Address, dest: IPv6Address, body: bytes) -> int:
    pseudo = source.packed + dest.packed + struct.pack("!I3xB", len(body), ICMPV6)
    data = pseudo + body + b"\0" * (len(body) % 2)
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def dad_probe(target: IPv6Address) -> bytes:
    """The whole IPv6 packet of a DAD solicitation for `target`: from ::, to its
    solicited-node group, without a source link-layer option (RFC 4861 §4.3 forbids one from
    ::). A raw socket can't send from :: any other way than with the header written here."""
    dest = solicited_node(target)
    body = struct.pack("!BBHI", NS, 0, 0, 0) + target.packed
    body = body[:2] + struct.pack("!H", _checksum(UNSPECIFIED, dest, body)) + body[4:]
    header = struct.pack("!IHBB", 6 << 28, len(body), ICMPV6, HOP_LIMIT)
    return header + UNSPECIFIED.packed + dest.packed + body


def advertisement(target: IPv6Address, mac: bytes, *, override: bool) -> bytes:
    """An unsolicited NA's ICMPv6 message (the kernel fills in the checksum of a raw ICMPv6
    socket): Solicited clear, Router clear (a container is no router), Override only once
    nobody else answered the probe, and the target link-layer option naming `mac`."""
    flags = _OVERRIDE if override else 0
    option = struct.pack("!BB", _TARGET_LL, (2 + len(mac) + 7) // 8) + mac
    option += b"\0" * (-len(option) % 8)
    return struct.pack("!BBHB3x", NA, 0, 0, flags) + target.packed + option


@dataclass(frozen=True)
class Answer:
    """An advertisement for `target` heard on the uplink."""

    target: IPv6Address
    mac: bytes | None  # its target link-layer option; None when it carried none
    override: bool
    router: bool

    @property
    def who(self) -> str:
        return mac_text(self.mac) if self.mac else "a host that gave no link-layer address"


def parse_answer(message: bytes) -> Answer | None:
    """An ICMPv6 message as a raw socket hands it over (no IPv6 header); None unless it is a
    well-formed NA. Options are walked as RFC 4861 §4.6 lays them out; a zero length ends it."""
    if len(message) < 24 or message[0] != NA or message[1] != 0:
        return None
    flags, target = message[4], IPv6Address(message[8:24])
    mac, rest = None, message[24:]
    while len(rest) >= 2 and rest[1] != 0 and len(rest) >= rest[1] * 8:
        size = rest[1] * 8
        if rest[0] == _TARGET_LL:
            mac = rest[2:8] if size == 8 else rest[2:size]
        rest = rest[size:]
    return Answer(target, mac, bool(flags & _OVERRIDE), bool(flags & _ROUTER))


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass
class Repeats:
    """When the 2nd and 3rd NA of each announcement are due: (due, left, uplink, address)."""

    heap: list[tuple[float, int, str, IPv6Address]] = field(default_factory=list)

    def add(self, uplink: str, addresses: list[IPv6Address], now: float) -> None:
        for address in addresses:
            heapq.heappush(self.heap, (now + RETRANS, REPEATS, uplink, address))

    def wait(self, now: float) -> float | None:
        """Seconds until the next is due (0: one is), None when none is planned."""
        return max(0.0, self.heap[0][0] - now) if self.heap else None

    def due(self, now: float) -> dict[str, list[IPv6Address]]:
        """Those due now, by uplink; each planned again RETRANS later while it has repeats left."""
        found: dict[str, list[IPv6Address]] = {}
        while self.heap and self.heap[0][0] <= now:
            at, left, uplink, address = heapq.heappop(self.heap)
            found.setdefault(uplink, []).append(address)
            if left > 1:
                heapq.heappush(self.heap, (at + RETRANS, left - 1, uplink, address))
        return found
