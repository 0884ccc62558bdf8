"""A second host on the lab's LAN: the LAN neighbour's end of the uplink goes into a bridge
(br0, with eth0's MAC, which the Docker host already knows, and its address) together with a
veth to a new namespace, `hostb`, set up as v6gen leaves a host (forwarding, proxy_ndp,
proxy_delay 0), so that a proxy entry there is another v6gen host's claim. For issue 23's
probe and issue 22's announcement (test_claims.py, bench/claims.py)."""

from __future__ import annotations

import json

from .labhost import Lab
from .nsproc import Namespace
from .topology import Uplink

LAN_IF = Uplink.lan_if


def mac(ns: Namespace, ifname: str) -> str:
    return str(json.loads(ns.run(f"ip -json link show dev {ifname}").stdout)[0]["address"])


def neighbour(lan: Namespace, addr: str) -> tuple[str, str]:
    """(link-layer address, state) of the LAN host's entry for addr; ("", "") without one."""
    out = lan.run(f"ip -6 neigh show {addr} dev br0").stdout.split()
    lladdr = out[out.index("lladdr") + 1] if "lladdr" in out else ""
    return lladdr, (out[-1] if out else "")


def second_host(lab: Lab) -> Namespace:
    """Bridge the LAN neighbour's end of the uplink with a veth to a new namespace."""
    lan = lab.lan()
    hostb = Namespace(lab.logdir, "hostb", parent=lan)
    hostb.start()
    eth = mac(lan, LAN_IF)
    # No multicast snooping: the bridge floods solicitations as an unmanaged switch does, so
    # none waits for MLD reports of a group joined a moment ago (a new proxy entry's).
    lan.run(
        "set -e; ip link add name br0 type bridge mcast_snooping 0;"
        " sysctl -qw net.ipv6.conf.br0.accept_dad=0;"
        # The Docker host knows the neighbour by eth0's MAC: the bridge keeps it.
        f" ip link set br0 address {eth};"
        f" ip addr del 2001:db8::100/64 dev {LAN_IF}; ip link set {LAN_IF} master br0;"
        f" ip link add name ethb type veth peer name hb0 netns {hostb.pid};"
        " ip link set ethb master br0; ip link set ethb up; ip link set br0 up;"
        " ip addr add 2001:db8::100/64 dev br0 nodad;"
        # Lab-only, as eth0's: the neighbour re-solicits every 100 ms.
        " sysctl -qw net.ipv6.neigh.br0.retrans_time_ms=100 net.ipv6.neigh.br0.mcast_solicit=50"
    )
    hostb.run(
        "set -e; ip link set lo up; sysctl -qw net.ipv6.conf.hb0.accept_dad=0;"
        " ip link set hb0 up; ip addr add 2001:db8::2/64 dev hb0 nodad;"
        " sysctl -qw net.ipv6.conf.all.forwarding=1 net.ipv6.conf.all.proxy_ndp=1"
        " net.ipv6.conf.hb0.proxy_ndp=1 net.ipv6.neigh.hb0.proxy_delay=0"
    )
    return hostb
