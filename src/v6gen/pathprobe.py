"""Ask the kernel what the host's firewall lets through: run as `python3 -m v6gen.pathprobe`
(root), it reads a request (JSON) on stdin and prints, per round, which probes came out on the
bridge side.

Each round happens in a network namespace of its own, made here and gone when the round ends:
a veth named like the host's uplink (its peer plays the LAN), one veth per bridge named like the
host's bridge, the host's uplink address and routes to the container addresses; then the round's
rules (ip6tables-legacy-restore, ip6tables-nft-restore, `nft -f`) and the LAN-shaped packets: an
ICMPv6 echo request and a TCP SYN per port, written as Ethernet frames into the LAN end; then,
for each that the kernel transmitted on a bridge, the container's answer (echo reply, SYN-ACK)
written into the bridge's other end. A probe passed when its answer left through the uplink.

When to stop listening is an event, not a clock: the process is pinned to one CPU, so every
frame it sends queues on that CPU's backlog and is processed in order, a forwarded probe's
transmission included (permanent neighbour entries, noqueue veths: nothing waits). A last
frame of an ethertype netfilter never sees marks the end: once the uplink has received it,
every probe before it has been forwarded or dropped. Before that, every link must have passed
a frame to its peer (_wait_ready): a veth just brought up drops what it is given at first.

Stdlib only (and v6gen.hostview), and nothing here touches the host's own namespace: the rules
are replayed, never changed where they are in force.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from ipaddress import IPv6Address, IPv6Interface
from typing import Any

from v6gen import hostview

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
ETH_P_IPV6 = 0x86DD
ETH_P_END = 0x88B5  # IEEE "local experimental": no protocol handler, netfilter never sees it
PACKET_OUTGOING = 4
UPLINK_MAC = bytes.fromhex("027636000001")
LAN_MAC = bytes.fromhex("027636000002")
SOURCE_MAC = bytes.fromhex("027636000003")  # every frame sent: the LAN host, or a container
CONTAINER_MAC = "02:76:36:00:01:01"
BRIDGE_MAC = bytes.fromhex("02763602")  # + the bridge's number
LAN_PEER = "v6g-lan"
READY_WAIT = 10.0  # only bounds a link that never comes up
READY_TRY = 0.05  # one frame's wait before it is sent again: a lost frame never arrives
END_WAIT = 10.0  # only bounds a kernel that never delivers the end marker; never reached
TOOL_TIMEOUT = 20.0
ECHO_ID = 0x7636
FIRST_SPORT = 40000


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def _ipv6(src: IPv6Address, dst: IPv6Address, proto: int, payload: bytes) -> bytes:
    """An IPv6 packet with a correct upper-layer checksum (conntrack marks bad ones INVALID,
    which most firewalls drop first)."""
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(payload), proto)
    offset = 2 if proto == socket.IPPROTO_ICMPV6 else 16
    csum = _checksum(pseudo + payload)
    payload = payload[:offset] + struct.pack("!H", csum) + payload[offset + 2 :]
    header = struct.pack("!IHBB", 6 << 28, len(payload), proto, 64)
    return header + src.packed + dst.packed + payload


def echo_request(src: IPv6Address, dst: IPv6Address, seq: int) -> bytes:
    return _ipv6(src, dst, socket.IPPROTO_ICMPV6, struct.pack("!BBHHH", 128, 0, 0, ECHO_ID, seq))


def tcp_syn(src: IPv6Address, dst: IPv6Address, sport: int, dport: int) -> bytes:
    # 20-byte header, SYN, window 64240, an MSS option (as every real SYN carries one).
    header = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 6 << 4, 0x02, 64240, 0, 0)
    return _ipv6(src, dst, socket.IPPROTO_TCP, header + struct.pack("!BBH", 2, 4, 1440))


def echo_reply(src: IPv6Address, dst: IPv6Address, seq: int) -> bytes:
    return _ipv6(src, dst, socket.IPPROTO_ICMPV6, struct.pack("!BBHHH", 129, 0, 0, ECHO_ID, seq))


def tcp_syn_ack(src: IPv6Address, dst: IPv6Address, sport: int, dport: int) -> bytes:
    """The answer to tcp_syn(dst, src, dport, sport): it acknowledges that SYN's sequence 1."""
    header = struct.pack("!HHIIBBHHH", sport, dport, 1000, 2, 6 << 4, 0x12, 64240, 0, 0)
    return _ipv6(src, dst, socket.IPPROTO_TCP, header + struct.pack("!BBH", 2, 4, 1440))


Key = tuple[str, str | int, int]


def probe_key(frame: bytes) -> Key | None:
    """(destination, "echo"/"echo-reply" or the TCP destination port, sequence or TCP source
    port) of a frame."""
    if len(frame) < 14 + 40 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IPV6:
        return None
    ip = frame[14:]
    proto, dst, l4 = ip[6], str(IPv6Address(ip[24:40])), ip[40:]
    if proto == socket.IPPROTO_ICMPV6 and len(l4) >= 8 and l4[0] in (128, 129):
        ident, seq = struct.unpack("!HH", l4[4:8])
        kind = "echo" if l4[0] == 128 else "echo-reply"
        return (dst, kind, seq) if ident == ECHO_ID else None
    if proto == socket.IPPROTO_TCP and len(l4) >= 4:
        sport, dport = struct.unpack("!HH", l4[:4])
        return dst, dport, sport
    return None


def _run(argv: list[str], stdin: str = "") -> None:
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]}: {done.stderr.strip() or done.returncode}")


def _new_netns() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")


def _sysctl(key: str, value: str) -> None:
    with open(hostview.proc_sys() / "net" / key, "w", encoding="ascii") as f:  # noqa: PTH123
        f.write(value)


def _bridge_peers(req: dict[str, Any]) -> dict[str, tuple[str, bytes]]:
    """Each bridge's stand-in: the name of its other end, where the container's replies are
    sent from, and its own MAC (set here: this namespace's links are not in /sys)."""
    bridges = sorted({t["bridge"] for t in req["targets"]})
    return {b: (f"v6g-br{i}", BRIDGE_MAC + struct.pack("!H", i)) for i, b in enumerate(bridges)}


def _links(req: dict[str, Any]) -> None:
    uplink = req["uplink"]
    for key in ("ipv6/conf/default/accept_dad", "ipv6/conf/all/accept_dad"):
        _sysctl(key, "0")
    _sysctl("ipv6/conf/all/forwarding", "1")
    _sysctl("ipv6/conf/default/forwarding", "1")
    lines = [
        "link set lo up",
        f"link add {uplink} address {UPLINK_MAC.hex(':')} type veth peer name {LAN_PEER}"
        f" address {LAN_MAC.hex(':')}",
        f"link set {uplink} up",
        f"link set {LAN_PEER} up",
        f"addr add {IPv6Interface(req['uplink_address'])} dev {uplink} nodad",
    ]
    for bridge, (peer, mac) in _bridge_peers(req).items():
        lines += [
            f"link add {bridge} address {mac.hex(':')} type veth peer name {peer}",
            f"link set {bridge} up",
            f"link set {peer} up",
        ]
    # The LAN host's replies go back through the uplink without a solicitation first.
    lan = IPv6Address(req["lan_source"])
    lines.append(f"neigh replace {lan} lladdr {SOURCE_MAC.hex(':')} dev {uplink} nud permanent")
    for t in req["targets"]:
        lines += [
            f"route replace {IPv6Address(t['address'])}/128 dev {t['bridge']}",
            f"neigh replace {IPv6Address(t['address'])} lladdr {CONTAINER_MAC}"
            f" dev {t['bridge']} nud permanent",
        ]
    _run(["ip", "-batch", "-"], "\n".join(lines) + "\n")


class Wire:
    """One round's two packet sockets: one that hears every link of the namespace, one that
    sends on any (an AF_PACKET socket costs an RCU grace period, ~10 ms, to close: two per
    round, not one per link)."""

    def __init__(self) -> None:
        self.listen = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.listen.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        self.out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        self.ends = 0

    def send(self, ifname: str, mac: bytes, ethertype: int, payload: bytes) -> None:
        self.out.sendto(mac + SOURCE_MAC + struct.pack("!H", ethertype) + payload, (ifname, 0))

    def heard(self, wait: float) -> tuple[bytes, str, int] | None:
        """(frame, interface, packet type) of the next frame, None after `wait` seconds."""
        ready, _, _ = select.select([self.listen], [], [], wait)
        if not ready:
            return None
        frame, addr = self.listen.recvfrom(65535)  # addr: (interface, protocol, type, ...)
        return frame, addr[0], addr[2]

    def close(self) -> None:
        self.listen.close()
        self.out.close()


def _wait_ready(req: dict[str, Any], wire: Wire) -> None:
    """Until every link passes frames both ways. A veth just brought up drops what it is
    given to send until the kernel has activated it (linkwatch, asynchronous: later on a busy
    machine), and `ip link` showing it up is not proof: a frame seen arriving at the other end
    is. Frames not seen within READY_TRY are sent again, within READY_WAIT."""
    pending: dict[bytes, tuple[str, str]] = {}
    links = [(LAN_PEER, req["uplink"])]
    links += [(bridge, peer) for bridge, (peer, _) in _bridge_peers(req).items()]
    for a, b in links:
        for src, dst in ((a, b), (b, a)):
            pending[f"v6gen ready {src}".encode().ljust(46, b"\0")] = (src, dst)
    deadline = time.monotonic() + READY_WAIT
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"links pass no frame: {sorted(pending.values())}")
        for marker, (src, _) in pending.items():
            wire.send(src, b"\xff" * 6, ETH_P_END, marker)
        until = time.monotonic() + READY_TRY
        while pending and (left := until - time.monotonic()) > 0:
            got = wire.heard(left)
            if got is None:
                break
            frame, ifname, pkttype = got
            hop = pending.get(frame[14:60])
            if hop is not None and pkttype != PACKET_OUTGOING and ifname == hop[1]:
                del pending[frame[14:60]]


def _load(rnd: dict[str, Any]) -> None:
    for key, argv in (
        ("legacy", ["ip6tables-legacy-restore"]),
        ("iptables_nft", ["ip6tables-nft-restore"]),
        ("nft", ["nft", "-f", "-"]),
    ):
        if rnd.get(key):
            _run(argv, rnd[key])


def _exchange(
    wire: Wire,
    sends: list[tuple[str, bytes, bytes]],
    end: tuple[str, bytes],
    watch: set[str],
    wanted: dict[Key, list[Any]],
) -> list[list[Any]]:
    """Send (interface, destination MAC, IPv6 packet) frames, then the end marker to (its
    receiving interface's peer, MAC); return wanted[key] of every frame transmitted on an
    interface in `watch` before the end marker arrived."""
    for ifname, mac, packet in sends:
        wire.send(ifname, mac, ETH_P_IPV6, packet)
    wire.ends += 1
    marker = f"v6gen end {wire.ends}".encode().ljust(46, b"\0")
    wire.send(end[0], end[1], ETH_P_END, marker)
    seen: list[list[Any]] = []
    while True:
        got = wire.heard(END_WAIT)
        if got is None:
            raise RuntimeError("the end marker never arrived")
        frame, ifname, pkttype = got
        if pkttype != PACKET_OUTGOING and frame[14:60] == marker:
            return seen
        if ifname in watch and pkttype == PACKET_OUTGOING:
            key = probe_key(frame)
            if key in wanted:
                seen.append(wanted.pop(key))


def _probe(req: dict[str, Any], wire: Wire) -> list[list[Any]]:
    """The LAN's probes in through the uplink; then, for those that came out on a bridge, the
    container's replies back (a firewall that lets a SYN in but not its SYN-ACK out blocks
    the connection as surely: conntrack sees the reply as ESTABLISHED, as it would)."""
    lan = IPv6Address(req["lan_source"])
    peers = _bridge_peers(req)
    inbound: list[tuple[str, bytes, bytes]] = []
    wanted: dict[Key, list[Any]] = {}
    replies: dict[tuple[int, str | int], tuple[str, bytes, bytes]] = {}
    back: dict[Key, list[Any]] = {}
    for i, t in enumerate(req["targets"]):
        dst, bridge = IPv6Address(t["address"]), t["bridge"]
        inbound.append((LAN_PEER, UPLINK_MAC, echo_request(lan, dst, i)))
        wanted[(str(dst), "echo", i)] = [i, "echo"]
        replies[(i, "echo")] = (*peers[bridge], echo_reply(dst, lan, i))
        back[(str(lan), "echo-reply", i)] = [i, "echo"]
        for j, port in enumerate(t["ports"]):
            sport = FIRST_SPORT + (i * 8 + j) % 20000
            inbound.append((LAN_PEER, UPLINK_MAC, tcp_syn(lan, dst, sport, int(port))))
            wanted[(str(dst), int(port), sport)] = [i, int(port)]
            answer = tcp_syn_ack(dst, lan, int(port), sport)
            replies[(i, int(port))] = (*peers[bridge], answer)
            back[(str(lan), sport, int(port))] = [i, int(port)]
    bridges = set(peers)
    got_in = _exchange(wire, inbound, (LAN_PEER, UPLINK_MAC), bridges, wanted)
    if not got_in:
        return []
    outbound = [replies[(i, probe)] for i, probe in got_in]
    first = outbound[0]
    return _exchange(wire, outbound, (first[0], first[1]), {req["uplink"]}, back)


def main() -> int:
    req = json.load(sys.stdin)
    # One CPU: the frames queue on one backlog, in order (see the module's docstring).
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    results: dict[str, Any] = {}
    for rnd in req["rounds"]:
        try:
            _new_netns()
            _links(req)
            _load(rnd)
            wire = Wire()
            try:
                _wait_ready(req, wire)
                results[rnd["name"]] = {"passed": _probe(req, wire)}
            finally:
                wire.close()
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            results[rnd["name"]] = {"error": str(exc)}
    json.dump({"rounds": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
