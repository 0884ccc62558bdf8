"""first_contact_*_p50_ms: the LAN neighbour's first ping to a container after it forgot the
container's link-layer address (`ip -6 neigh flush dev eth0` in the LAN namespace), so the echo
waits for Neighbour Discovery: the host's proxied neighbour advertisement (kernel, delayed by a
random 0..proxy_delay) or ndppd's. The number is ping's own rtt of that first reply.

Lab: networkd 252, dockerd, the seed compose file (one container at 2001:db8::a:71a5), synced
by `v6gen sync`. The LAN neighbour's NDP timers are put back to the kernel defaults
(retrans_time 1 s, 3 solicitations) for these rows; the lab's 100 ms re-solicit would otherwise
let the neighbour draw several random delays and keep the shortest.
1. v6gen: proxy_delay=0 as sync set it.
2. kernel default: proxy_delay=80 (0.8 s), the same proxy entry.
3. ndppd 0.2.5 (Debian) with a static rule for the address, after `v6gen clean` removed v6gen's
   files, hooks and proxy entries.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .common import PING_TIME, Section, log, pct, rnd, summary
from .labutil import PROBE, SEED, start_lab, sync_json

TRIALS = 20
PING = f"/bin/busybox ping -6 -c 1 -W 3 {PROBE}"
NDPPD_CONF = f"""# v6gen bench: answer for the seed container only
route-ttl 30000
proxy uplink0 {{
    router no
    timeout 500
    ttl 30000
    rule {PROBE}/128 {{
        static
    }}
}}
"""


def _ping(lab: Any) -> float | None:
    res = lab.lan().run(PING, check=False, timeout=10)
    m = PING_TIME.search(res.stdout)
    return float(m.group(1)) if res.returncode == 0 and m else None


def _pings(lab: Any, n: int, warm: list[float] | None = None) -> tuple[list[float], int]:
    """n first pings after a flush; with `warm`, also one ping right after each (the cache then
    holds the address) for the rtt without Neighbour Discovery."""
    lan = lab.lan()
    rtts: list[float] = []
    lost = 0
    for _ in range(n):
        for _ in range(5):
            lan.run("ip -6 neigh flush dev eth0", check=False)
            if not lan.run(f"ip -6 neigh show to {PROBE} dev eth0").stdout.strip():
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the LAN neighbour keeps a cache entry for {PROBE}")
        rtt = _ping(lab)
        if rtt is None:
            lost += 1
        else:
            rtts.append(rtt)
        if warm is not None and (again := _ping(lab)) is not None:
            warm.append(again)
        time.sleep(0.05)
    return rtts, lost


def _warm(lab: Any) -> None:
    """One answered ping first (the host's own caches, ndppd's start-up), not counted."""
    for _ in range(10):
        if lab.lan().run(PING, check=False, timeout=10).returncode == 0:
            return
        time.sleep(0.3)
    raise RuntimeError(f"the LAN neighbour cannot reach {PROBE} at all\n{lab.logs()}")


def run(workdir: Path) -> Section:
    sec = Section()
    lab = start_lab(workdir / "contact")
    rows: dict[str, tuple[list[float], int]] = {}
    try:
        lab.compose_up(SEED)
        sync_json(lab)
        lab.lan().run(
            "sysctl -qw net.ipv6.neigh.eth0.retrans_time_ms=1000"
            " net.ipv6.neigh.eth0.mcast_solicit=3"
        )
        delay = lab.sysctl("net.ipv6.neigh.uplink0.proxy_delay")
        if delay != "0":
            raise RuntimeError(f"v6gen sync left proxy_delay={delay}, not 0")
        _warm(lab)
        warm: list[float] = []
        rows["v6gen"] = _pings(lab, TRIALS, warm)

        lab.run("sysctl -qw net.ipv6.neigh.uplink0.proxy_delay=80")
        _warm(lab)
        rows["default"] = _pings(lab, TRIALS)

        res = lab.v6gen("clean")
        if res.returncode != 0:
            raise RuntimeError(f"v6gen clean failed: {res.stdout}{res.stderr}")
        lab.run(f"ip -6 neigh del proxy {PROBE} dev uplink0", check=False)
        if lab.proxy_entries():
            raise RuntimeError(f"proxy entries left after clean: {lab.proxy_entries()}")
        sec.detail["first_contact_ndppd_forwarding"] = lab.sysctl("net.ipv6.conf.all.forwarding")
        lab.run("sysctl -qw net.ipv6.conf.all.forwarding=1")
        conf = workdir / "contact" / "ndppd.conf"
        conf.write_text(NDPPD_CONF)
        lab.host.spawn("ndppd", ["ndppd", "-c", str(conf)])
        time.sleep(0.5)
        _warm(lab)
        rows["ndppd"] = _pings(lab, TRIALS)
        lab.host.stop_proc("ndppd")
    finally:
        lab.stop()

    for name, key in (
        ("v6gen", "first_contact"),
        ("default", "first_contact_default"),
        ("ndppd", "first_contact_ndppd"),
    ):
        rtts, lost = rows[name]
        sec.metrics[f"{key}_p50_ms"] = rnd(pct(rtts, 50), 3) if rtts else None
        sec.metrics[f"{key}_p95_ms"] = rnd(pct(rtts, 95), 3) if rtts else None
        sec.detail[f"{key}_ms"] = {**summary(rtts, 3), "lost": lost}
        log(f"first contact {name}: p50 {pct(rtts, 50):.3f} ms, {lost} lost")
    sec.metrics["ping_rtt_warm_cache_p50_ms"] = rnd(pct(warm, 50), 3) if warm else None
    sec.detail["ping_rtt_warm_cache_ms"] = summary(warm, 3)
    sec.notes.append(
        f"first contact: {TRIALS} pings per row from the LAN namespace (busybox ping, its rtt), "
        "neighbour cache flushed before each, LAN NDP timers at kernel defaults; default = "
        "proxy_delay 80 jiffies; ndppd 0.2.5 static rule after `v6gen clean`"
    )
    return sec
