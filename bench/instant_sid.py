"""instant_sid_*: bench/instant.py's first rows on dockerd 28.5 (Debian sid's tree, networkd 262,
v6gen under sid's python3 3.14 and Debian's libraries): `docker run -d` returned -> the first
reply to a LAN ping sent at once, v6gen watch against nothing, in one lab.

28.5 connects a container's network only 9-36 ms before `docker run -d` returns, so watch
claims a static address at the container's `create` (v6gen.instant). The network is in gateway
mode `routed` (in the default `nat` the LAN reaches no container at all, docker-firewall.md).
ndppd is not measured here: the sid tree has no ndppd, and the machine's (bookworm's) is not
the release under test. Same timing and method as bench/instant.py; another container runs
throughout, as there.
"""

from __future__ import annotations

from pathlib import Path

from tests.lab.lanping import Pinger
from tests.lab.watchproc import WatchProc

from .common import Section, log, pct, summary
from .instant import NONE_TRIALS, TRIALS, _addr, _first_replies, _pct, _run
from .labutil import start_lab, wait_quiet

NET, SUBNET = "inst", "2001:db8::d:0/112"
ROUTED = {"com.docker.network.bridge.gateway_mode_ipv6": "routed"}


def run(workdir: Path) -> Section:
    sec = Section()
    lab = start_lab(workdir / "instant-sid", release="sid")
    try:
        lab.docker.call("POST", "/networks/create", {
            "Name": NET, "EnableIPv6": True, "Options": ROUTED,
            "IPAM": {"Config": [{"Subnet": SUBNET}]},
        })  # fmt: skip
        lab.lan().run(
            "sysctl -qw net.ipv6.neigh.eth0.retrans_time_ms=1000"
            " net.ipv6.neigh.eth0.mcast_solicit=3"
        )
        _run(lab, _addr(99))  # the resident container
        with Pinger(lab.lan().pid) as pinger:
            watch = WatchProc(lab)
            try:
                wait_quiet(watch.log, quiet=1.0, timeout=60)

                def quiet() -> None:
                    wait_quiet(watch.log, quiet=0.3, timeout=10)

                _first_replies(lab, pinger, 0, 1, quiet)  # warm-up
                replies, lost, _ = _first_replies(lab, pinger, 1, TRIALS, quiet)
            finally:
                watch.stop()
            log(f"instant_sid: watch first reply p50 {pct(replies, 50):.2f} ms, {lost} lost")
            lab.v6gen("clean")
            none, none_lost, _ = _first_replies(lab, pinger, 300, NONE_TRIALS, lambda: None)
    finally:
        lab.stop()
    sec.metrics["instant_sid_watch_first_reply_p50_ms"] = _pct(replies, lost, 50)
    sec.metrics["instant_sid_watch_first_reply_p95_ms"] = _pct(replies, lost, 95)
    sec.metrics["instant_sid_watch_first_reply_answered"] = len(replies)
    sec.detail["instant_sid_watch_first_reply_ms"] = {**summary(replies, 2), "lost": lost}
    sec.metrics["instant_sid_none_replied"] = len(none)
    sec.metrics["instant_sid_none_runs"] = len(none) + none_lost
    sec.notes.append(
        f"instant_sid: dockerd 28.5 in sid's tree, a `routed` network, {TRIALS} runs of "
        "`docker run -d --ip6` then one ICMPv6 echo from the LAN at the CLI's return"
    )
    return sec
