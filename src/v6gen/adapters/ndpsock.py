"""Neighbour Discovery on an uplink through raw IPv6 sockets (CAP_NET_RAW; AF_INET6 only,
which v6gen.service's RestrictAddressFamilies= allows, where a packet socket would need
AF_PACKET too).

The probe goes out from :: with its own IPv6 header (IPPROTO_RAW) and multicast loopback off:
the host's kernel answers DAD solicitations for addresses in its proxy table (v6gen's own
optimistic entry among them), so a looped-back probe would be answered by the host itself.
Answers whose link-layer address is one of the host's own are ignored as well, whichever way
they came."""

from __future__ import annotations

import contextlib
import fcntl
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from ipaddress import IPv6Address

from v6gen import ndp
from v6gen.errors import KernelError
from v6gen.ndp import Repeats

_SIOCGIFHWADDR = 0x8927
_ICMP6_FILTER = 1  # <netinet/icmp6.h>, level IPPROTO_ICMPV6
RATE = 100  # NAs per second, at most, over every uplink and address (issue 22)


def hardware_address(name: str) -> bytes:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        request = struct.pack("256s", name.encode()[:15])
        try:
            answer = fcntl.ioctl(s.fileno(), _SIOCGIFHWADDR, request)
        except OSError as exc:
            raise KernelError(f"cannot read the link-layer address of {name}: {exc}", "") from None
    return answer[18:24]


def own_addresses() -> frozenset[bytes]:
    """Every link-layer address of this network namespace's interfaces (not sysfs: that shows
    the namespace it was mounted in)."""
    found: set[bytes] = set()
    for _, name in socket.if_nameindex():
        try:
            found.add(hardware_address(name))
        except KernelError:
            continue  # gone meanwhile
    return frozenset(m for m in found if any(m))


def _only_advertisements() -> bytes:
    # ICMP6_FILTER is a 256-bit "block" mask: everything blocked but NA.
    words = [0xFFFFFFFF] * 8
    words[ndp.NA >> 5] &= ~(1 << (ndp.NA & 31))
    return struct.pack("8I", *words)


def _raw(proto: int, ifname: str) -> socket.socket:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, proto)
    except PermissionError:
        raise KernelError(
            "cannot open a raw IPv6 socket to probe and announce addresses",
            "v6gen needs root (CAP_NET_RAW)",
        ) from None
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ndp.HOP_LIMIT)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(ifname))
    return s


class RawNdp:
    """`probe` and `announce` on the host's uplinks; one RawNdp per process keeps the NA rate
    (RATE a second over any second) across calls. With `still_ours` (watch, a process that
    lives on), each announcement is repeated twice more, ndp.RETRANS apart, on a thread of its
    own, for as long as `still_ours(uplink, address)` says v6gen still holds it; a short-lived
    `v6gen sync` sends the first only."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        still_ours: Callable[[str, IPv6Address], bool] | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque(maxlen=RATE)
        self._still_ours = still_ours
        self._pace_lock = threading.Lock()  # the repeating thread sends too
        self._wake = threading.Condition()
        self._repeats = Repeats()
        self._thread: threading.Thread | None = None

    def probe(
        self, uplink: str, addresses: Collection[IPv6Address], wait: float
    ) -> dict[IPv6Address, str]:
        """One DAD probe per address, then `wait` seconds of listening: address -> who answered
        (a MAC), for those someone other than this host answered."""
        if not addresses:
            return {}
        mine = own_addresses()
        index = socket.if_nametoindex(uplink)
        heard: dict[IPv6Address, str] = {}
        with _raw(socket.IPPROTO_ICMPV6, uplink) as listen, _raw(socket.IPPROTO_RAW, uplink) as out:
            listen.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, _only_advertisements())
            for address in addresses:
                dest = str(ndp.solicited_node(address))
                out.sendto(ndp.dad_probe(address), (dest, 0, 0, index))
            deadline = self._clock() + wait
            while (left := deadline - self._clock()) > 0:
                if not select.select([listen], [], [], left)[0]:
                    break
                answer = ndp.parse_answer(listen.recv(2048))
                if answer is None or answer.target not in addresses or answer.mac in mine:
                    continue
                heard.setdefault(answer.target, answer.who)
        return heard

    def announce(self, uplink: str, addresses: Iterable[IPv6Address], *, override: bool) -> None:
        """One unsolicited NA per address to all-nodes, from the uplink's link-local address
        (the kernel picks it for a link-scope destination), naming the uplink's MAC."""
        addresses = list(addresses)
        self._send(uplink, addresses, override=override)
        if self._still_ours is None or not override or not addresses:
            return
        with self._wake:
            self._repeats.add(uplink, addresses, self._clock())
            if self._thread is None:
                self._thread = threading.Thread(target=self._repeat, name="ndp-repeat", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _send(self, uplink: str, addresses: Iterable[IPv6Address], *, override: bool) -> None:
        mac = hardware_address(uplink)
        index = socket.if_nametoindex(uplink)
        with _raw(socket.IPPROTO_ICMPV6, uplink) as s:
            for address in addresses:
                self._pace()
                message = ndp.advertisement(address, mac, override=override)
                s.sendto(message, (str(ndp.ALL_NODES), 0, 0, index))

    def _repeat(self) -> None:
        assert self._still_ours is not None
        while True:
            with self._wake:
                while (wait := self._repeats.wait(self._clock())) != 0:
                    self._wake.wait(wait)
                due = self._repeats.due(self._clock())
            for uplink, addresses in due.items():
                mine = [a for a in addresses if self._still_ours(uplink, a)]
                # An uplink gone meanwhile loses its repeats: the first NA was the one that
                # mattered, and a thread's error would reach nobody.
                with contextlib.suppress(OSError, KernelError):
                    if mine:
                        self._send(uplink, mine, override=True)

    def _pace(self) -> None:
        with self._pace_lock:
            if len(self._sent) == RATE:
                wait = self._sent[0] + 1.0 - self._clock()
                if wait > 0:
                    self._sleep(wait)
            self._sent.append(self._clock())
