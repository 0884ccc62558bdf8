"""Changes to the host's global IPv6 addresses as they happen, for `v6gen watch` to plan again
when an uplink's prefix comes, goes or is deprecated (no Docker event follows any of them).

Read in-process from rtnetlink's IPv6 address multicast group, not from a child such as
`ip -6 monitor address` (rulemonitor's way, where nft is the only reader of nf_tables' events):
a socket costs no process, no parsing of a tool's text, and works in v6gen.service's sandbox
(AF_NETLINK is allowed). The kernel also repeats an address's notification each time a router
advertisement refreshes its lifetimes (every few seconds to minutes): so the monitor keeps
each interface's global prefixes and deprecated addresses, and calls back only when those
change. An on-link route alone (a DHCPv6 /128 plus an RA's /64 route) is not followed: its
prefix changes with the address.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network

RTMGRP_IPV6_IFADDR = 0x100
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
NLMSG_DONE, NLMSG_ERROR = 3, 2
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_CACHEINFO, IFA_FLAGS = 1, 6, 8
IFA_F_DEPRECATED = 0x20
RT_SCOPE_UNIVERSE = 0
_NLMSG = struct.Struct("=IHHII")
_IFADDR = struct.Struct("=BBBBI")
_RTA = struct.Struct("=HH")
_CACHEINFO = struct.Struct("=IIII")
FOREVER = 0xFFFFFFFF


class Address:
    """One global IPv6 address as a notification describes it."""

    __slots__ = ("address", "deprecated", "ifindex", "new", "prefixlen", "valid")

    def __init__(
        self, ifindex: int, address: IPv6Address, prefixlen: int, flags: int, valid: int, new: bool
    ) -> None:
        self.ifindex, self.address, self.prefixlen = ifindex, address, prefixlen
        self.deprecated, self.valid, self.new = bool(flags & IFA_F_DEPRECATED), valid, new

    @property
    def prefix(self) -> IPv6Network:
        return IPv6Network((self.address, self.prefixlen), strict=False)


def parse(data: bytes) -> list[Address]:
    """The global-scope IPv6 address messages in one netlink datagram."""
    found = []
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _, _, _ = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            break
        body = data[offset + _NLMSG.size : offset + length]
        offset += (length + 3) & ~3
        if kind not in (RTM_NEWADDR, RTM_DELADDR) or len(body) < _IFADDR.size:
            continue
        family, prefixlen, flags, scope, index = _IFADDR.unpack_from(body)
        if family != socket.AF_INET6 or scope != RT_SCOPE_UNIVERSE:
            continue
        address, valid, pos = None, FOREVER, _IFADDR.size
        while pos + _RTA.size <= len(body):
            rta_len, rta_type = _RTA.unpack_from(body, pos)
            if rta_len < _RTA.size:
                break
            value = body[pos + _RTA.size : pos + rta_len]
            if rta_type == IFA_ADDRESS and len(value) == 16:
                address = IPv6Address(value)
            elif rta_type == IFA_FLAGS and len(value) == 4:
                flags = struct.unpack("=I", value)[0]  # the full flags; the header has 8 bits
            elif rta_type == IFA_CACHEINFO and len(value) >= _CACHEINFO.size:
                valid = _CACHEINFO.unpack_from(value)[1]
            pos += (rta_len + 3) & ~3
        if address is not None:
            found.append(Address(index, address, prefixlen, flags, valid, kind == RTM_NEWADDR))
    return found


class Prefixes:
    """Each interface's global prefixes and deprecated addresses, from notifications; says
    what changed, or nothing when a notification only refreshed lifetimes."""

    def __init__(self) -> None:
        # ifindex -> {address: (prefix, deprecated)}
        self._seen: dict[int, dict[IPv6Address, tuple[IPv6Network, bool]]] = {}

    def update(self, a: Address) -> str:
        mine = self._seen.setdefault(a.ifindex, {})
        before = {p for p, _ in mine.values()}
        was = mine.get(a.address)
        if a.new:
            mine[a.address] = (a.prefix, a.deprecated)
        else:
            mine.pop(a.address, None)
        after = {p for p, _ in mine.values()}
        if before != after:
            changes = [f"+{p}" for p in sorted(after - before)]
            return " ".join(changes + [f"-{p}" for p in sorted(before - after)])
        if a.new and a.deprecated and was is not None and not was[1]:
            life = "" if a.valid == FOREVER else f", valid for {a.valid} s more"
            return f"{a.prefix} deprecated{life}"
        return ""


class AddressMonitor:
    """Calls `changed(interface, what)` from its own thread when an interface's global IPv6
    prefixes change ("+2001:db8:2::/64 -2001:db8::/64") or one of its addresses is deprecated;
    `log` says once why it could not follow."""

    def __init__(self, changed: Callable[[str, str], None], log: Callable[[str], None]) -> None:
        self._changed = changed
        self._log = log
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._prefixes = Prefixes()

    def start(self) -> bool:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            sock.bind((0, RTMGRP_IPV6_IFADDR))
            # The addresses there are now, so the first notification has something to differ
            # from; read by the same loop as the notifications (both only update the table).
            request = _NLMSG.pack(
                _NLMSG.size + _IFADDR.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
            ) + _IFADDR.pack(socket.AF_INET6, 0, 0, 0, 0)
            sock.send(request)
        except OSError as exc:
            self._log(
                "not following the uplinks' addresses (rtnetlink: "
                f"{exc.strerror or exc}); a prefix change is seen at the next sync"
            )
            return False
        self._sock = sock
        # A netlink socket can't be shut down to wake its reader: a pipe ends the wait.
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return True

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        dumping = True
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                return
            try:
                data = sock.recv(65536)
            except OSError as exc:
                # ENOBUFS: notifications were lost; the table may be behind, so say so once
                # and let the next sync read the truth.
                self._log(f"rtnetlink: {exc.strerror}; planning again")
                self._changed("", "notifications lost")
                continue
            for address in parse(data):
                what = self._prefixes.update(address)
                if what and not dumping:
                    with contextlib.suppress(OSError):
                        self._changed(socket.if_indextoname(address.ifindex), what)
            if dumping and _done(data):
                dumping = False

    def close(self) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        if self._sock is not None:
            self._sock.close()


def _done(data: bytes) -> bool:
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _, _, _ = _NLMSG.unpack_from(data, offset)
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            return True
        if length < _NLMSG.size:
            break
        offset += (length + 3) & ~3
    return False
