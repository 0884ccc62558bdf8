"""prefix_gone_to_word_*, prefix_back_to_reply_* (issue 23): watch following the uplink's
prefixes, with no Docker event.

Lab: networkd 252, dispatcher, dockerd 20.10; uplink0's .network gives it a second prefix,
2001:db8:7::1/64, besides the lab's own (so the default route stays), and the LAN neighbour
holds 2001:db8:7::100. `v6gen watch` runs from src/ (tests.lab.watchproc.WatchProc: each line
of its output stamped as it arrives). A long-running container `pa` (2001:db8:7::a:10) is
proxied; then, per trial:

- gone -> word: from just before `ip addr del 2001:db8:7::1/64 dev uplink0` is started (its
  process start included) to watch's "the LAN lost reach of pa" line;
- a container `pb<i>` started while the prefix is gone (not proxied: nothing on-link), watch
  quiet again;
- back -> reply: from just before `ip addr add` to the first echo reply the LAN neighbour gets
  (tests.lab.lanping: a raw socket in its namespace, one echo every 20 ms until one is
  answered), for `pa` (its entry kept by the grace rule) and then `pb<i>` (proxied by the sync
  the address notification started).

Translation (translate_ra_to_reply_*): a SLAAC lab (radvd in the LAN) with a ULA network
labelled v6gen.translate=true; per trial radvd advertises a new /64 (the earlier ones deprecated)
and the time runs from that RA's arrival at the host (a raw ICMPv6 socket in the host's
namespace) to the first LAN echo reply at the container's suffix on the new prefix: networkd's
SLAAC, the address notification, watch's debounce and sync, the nftables table and the entry;
and to watch's line saying the table moved (translate_ra_to_table_*). The reply mostly waits on
networkd: the sync's new drop-in line asks for a reload, and networkd's reload restarts the
uplink's NDisc, dropping its SLAAC addresses and RA routes for ~1 s (seen with `ip -6 monitor`
in the lab), so the container's reply has no route back until the next RA.

Baseline: without the address monitor (v6gen before issue 23), `pb<i>` gets no reply until the
next Docker event or manual sync, and `pa` none at all when a sync ran while the prefix was gone
(everything was torn down): no number to put beside these.
"""

from __future__ import annotations

import select
import socket
import time
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from tests.lab.lanping import Pinger
from tests.lab.watchproc import NotifySocket, WatchProc, create_container, create_network, start

from .common import Section, log, pct, rnd, summary
from .labutil import start_lab, wait_quiet

TRIALS = 7
PREFIX = "2001:db8:7::"
NET, SUBNET = "benchp", f"{PREFIX}a:0/120"


def _reply(pinger: Pinger, address: str, t0: float, timeout: float = 10) -> float | None:
    while time.perf_counter() - t0 < timeout:
        if pinger.first_reply(address, 0.02) is not None:
            return time.perf_counter() - t0
    return None


def _ra_with(sock: socket.socket, prefix: IPv6Network, timeout: float) -> float | None:
    """perf_counter time of the first router advertisement that reaches the host with `prefix`
    preferred (its Prefix Information option, RFC 4861 4.6.2), or None."""
    deadline = time.perf_counter() + timeout
    while (left := deadline - time.perf_counter()) > 0:
        if not select.select([sock], [], [], left)[0]:
            return None
        data = sock.recv(2048)
        now = time.perf_counter()
        pos = 16  # type, code, checksum, hop limit, flags, lifetime, reachable, retrans
        while data[:1] == b"\x86" and pos + 8 <= len(data):
            kind, units = data[pos], data[pos + 1]
            if units == 0:
                break
            if kind == 3 and units == 4 and pos + 32 <= len(data):
                length, preferred = data[pos + 2], int.from_bytes(data[pos + 8 : pos + 12], "big")
                found = IPv6Network((IPv6Address(data[pos + 16 : pos + 32]), length))
                if found == prefix and preferred > 0:
                    return now
            pos += units * 8
    return None


def _translated(workdir: Path) -> tuple[list[float], list[float]]:
    """RA with a new prefix -> first LAN reply at the container's translated address there,
    and -> watch's line saying the table moved (both in ms)."""
    from tests.lab.lanping import _socket_in
    from tests.lab.test_prefixes import ULA, ULA_PROBE, advertise

    lab = start_lab(workdir / "translate", ra_only=True)
    took: list[float] = []
    table: list[float] = []
    prefixes = [f"2001:db8:{0x10 + i:x}::" for i in range(TRIALS + 2)]
    try:
        for prefix in prefixes:
            lab.lan().run(f"ip addr add {prefix}100/64 dev eth0 nodad")
        advertise(lab, "2001:db8:: 86400 0", f"{prefixes[0]} 600 600")
        lab.docker.call("POST", "/networks/create", {
            "Name": "benchx", "CheckDuplicate": True, "EnableIPv6": True,
            "IPAM": {"Config": [{"Subnet": ULA}]}, "Labels": {"v6gen.translate": "true"},
        })  # fmt: skip
        start(lab, create_container(lab, "px", "benchx", ULA_PROBE))
        sock = _socket_in(lab.host.pid)  # ICMPv6 as the host gets it: the RAs
        with NotifySocket() as notify, WatchProc(lab, notify=notify) as watch:
            watch.wait_ready(timeout=60)
            pinger = Pinger(lab.lan().pid)
            try:
                for i, prefix in enumerate(prefixes[1:]):
                    wait_quiet(watch.log, quiet=1.5, timeout=30)
                    old = [f"{p} 600 0" for p in prefixes[: i + 1]]
                    mark = watch.mark()
                    advertise(lab, "2001:db8:: 86400 0", *old, f"{prefix} 600 600")
                    t_ra = _ra_with(sock, IPv6Network(f"{prefix}/64"), 30)
                    if t_ra is None:
                        raise RuntimeError(f"no RA with {prefix}/64\n{lab.logs()}")
                    wall = time.time() - (time.perf_counter() - t_ra)
                    reply = _reply(pinger, f"{prefix}a:71a5", t_ra)
                    if reply is None:
                        raise RuntimeError(f"no LAN reply at {prefix}a:71a5\n{watch.text()}")
                    if not watch.wait_for(rf"-> {prefix}a:71a0", 10, since=mark):
                        raise RuntimeError(f"watch did not move the table\n{watch.text()}")
                    moved = (watch.matching(rf"-> {prefix}a:71a0", since=mark)[0][0] - wall) * 1000
                    if i > 0:  # the first is the warm-up
                        took.append(reply * 1000)
                        table.append(moved)
            finally:
                pinger.close()
                sock.close()
    finally:
        lab.stop()
    return took, table


def run(workdir: Path) -> Section:
    sec = Section()
    lab = start_lab(workdir / "prefixes", uplink0_network=(f"Address={PREFIX}1/64",))
    gone_ms: list[float] = []
    kept_ms: list[float] = []
    new_ms: list[float] = []
    try:
        lab.lan().run(f"ip addr add {PREFIX}100/64 dev eth0 nodad")
        create_network(lab, NET, SUBNET)
        start(lab, create_container(lab, "pa", NET, f"{PREFIX}a:10"))
        with NotifySocket() as notify, WatchProc(lab, notify=notify) as watch:
            watch.wait_ready(timeout=60)
            wait_quiet(watch.log, quiet=1.5, timeout=30)  # the first sync's reload included
            pinger = Pinger(lab.lan().pid)
            try:
                for i in range(TRIALS + 1):
                    mark = watch.mark()
                    t0 = time.time()
                    lab.run(f"ip addr del {PREFIX}1/64 dev uplink0")
                    if not watch.wait_for(r"the LAN lost reach of pa ", 30, since=mark):
                        raise RuntimeError(f"watch said nothing\n{watch.text()}")
                    said = watch.matching(r"the LAN lost reach of pa ", since=mark)[0][0]
                    b = f"{PREFIX}a:{0x20 + i:x}"
                    start(lab, create_container(lab, f"pb{i}", NET, b))
                    wait_quiet(watch.log, quiet=1.0, timeout=30)
                    t1 = time.perf_counter()
                    lab.run(f"ip addr add {PREFIX}1/64 dev uplink0 nodad")
                    kept, new = _reply(pinger, f"{PREFIX}a:10", t1), _reply(pinger, b, t1)
                    if kept is None or new is None:
                        raise RuntimeError(f"no LAN reply ({kept}, {new})\n{watch.text()}")
                    wait_quiet(watch.log, quiet=1.5, timeout=30)  # its reload included
                    if i == 0:
                        continue  # warm-up
                    gone_ms.append((said - t0) * 1000)
                    kept_ms.append(kept * 1000)
                    new_ms.append(new * 1000)
            finally:
                pinger.close()
    finally:
        lab.stop()
    ra_ms, table_ms = _translated(workdir)
    log(
        f"prefixes: gone->word p50 {pct(gone_ms, 50):.0f} ms; back->reply kept "
        f"{pct(kept_ms, 50):.1f} ms, new {pct(new_ms, 50):.0f} ms"
    )
    sec.metrics.update(
        prefix_gone_to_word_p50_ms=rnd(pct(gone_ms, 50), 1),
        prefix_gone_to_word_p95_ms=rnd(pct(gone_ms, 95), 1),
        prefix_back_to_reply_kept_p50_ms=rnd(pct(kept_ms, 50), 2),
        prefix_back_to_reply_p50_ms=rnd(pct(new_ms, 50), 1),
        prefix_back_to_reply_p95_ms=rnd(pct(new_ms, 95), 1),
        translate_ra_to_reply_p50_ms=rnd(pct(ra_ms, 50), 1),
        translate_ra_to_reply_p95_ms=rnd(pct(ra_ms, 95), 1),
        translate_ra_to_table_p50_ms=rnd(pct(table_ms, 50), 1),
    )
    sec.detail.update(
        prefix_gone_to_word_ms=summary(gone_ms, 1),
        prefix_back_to_reply_kept_ms=summary(kept_ms, 2),
        prefix_back_to_reply_ms=summary(new_ms, 1),
        translate_ra_to_reply_ms=summary(ra_ms, 1),
        translate_ra_to_table_ms=summary(table_ms, 1),
    )
    sec.notes.append(
        f"prefixes: {TRIALS} trials (after one warm-up) of `ip addr del`/`add` of uplink0's "
        "second prefix with watch running and no Docker event; the word is watch's line, the "
        "reply a LAN echo every 20 ms; translation: radvd moves the LAN to a new prefix (the "
        "old ones deprecated), from the RA's arrival at the host (a raw ICMPv6 socket in its "
        "namespace) to the first reply at the translated address there"
    )
    return sec
