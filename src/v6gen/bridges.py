"""Which container bridges v6gen serves, for ending Duplicate Address Detection on them.

Measured in the lab (2026-12-05), a LAN host pinging a container on a network just created, as
`docker run -d` returns, with its proxy entry in place and the host's DAD at the kernel default:
the first reply came after 2,028-2,054 ms on dockerd 20.10 and 936-961 ms on 28.5. The echo
waits on the bridge: 20.10 adds its gateway address and fe80::1 when it creates the network,
tentative until the first container brings the bridge's carrier up and DAD has run (a random
delay up to 1 s, then 1 s for the probe), so the container can't resolve its gateway; 28.5 adds
the gateway `nodad`, and only the kernel's own link-local address, made when the carrier comes,
is tentative (under watch 28.5's first replies were mostly at once even so: README, "New
bridges"). `accept_dad=0` on the bridge applies only to addresses added after it is set:
set once the network exists it changed nothing on 20.10 (2,032-2,054 ms); re-adding the
tentative addresses with `nodad` answered in 0.2 ms, also once the container runs.

What DAD would protect there: another node on the bridge claiming the gateway's address. The
only nodes on a Docker bridge are its containers, whose addresses Docker's IPAM gives out (never
the gateway's, and `--ip6` of the gateway is refused), so v6gen ends DAD only on bridges that
hold the gateway of a network it serves: bridge driver, IPv6, not internal, its subnet inside
the on-link prefix of an uplink v6gen proxies for.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv6Network

from v6gen.model import DockerFacts, HostFacts


def served_subnets(
    uplinks: Iterable[str | None], facts: HostFacts, docker: DockerFacts
) -> tuple[IPv6Network, ...]:
    """IPv6 subnets of the Docker networks whose containers v6gen would proxy on `uplinks`."""
    links = [facts.links.get(name) for name in uplinks if name is not None]
    prefixes = [p for link in links if link is not None for p in link.prefixes]
    found: set[IPv6Network] = set()
    for network in docker.networks.values():
        if network.driver != "bridge" or not network.ipv6 or network.internal:
            continue
        found |= {s for s in network.subnets if any(s.subnet_of(p) for p in prefixes)}
    return tuple(sorted(found))
