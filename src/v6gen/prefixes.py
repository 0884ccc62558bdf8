"""The uplink's prefixes against the containers' addresses: the grace rule for a prefix that
leaves the uplink, each Docker network's subnet against the prefixes the uplink has now, and
what watch says when a prefix change takes reach away or gives it back. Pure.

The grace rule. A prefix that leaves an uplink takes nothing away: an address v6gen proxies
(owns the kernel entry of) whose prefix its uplink no longer has keeps its entry, its drop-in
line and its restore line, and with them the hooks and sysctls, for as long as its container
keeps the address (or until `v6gen clean`). It is reported as unreachable meanwhile. Why no
timer: a prefix that goes for a moment (a static address edited and reloaded, a DHCPv6 lease
renewed late, a router restarting) must find everything in place when it comes back, with or
without a sync to notice it, and an entry for an address outside the LAN's prefixes is
harmless, since no LAN host solicits an address it has no on-link prefix for. What ends it is
the container going, as for any entry. Lifetimes need no rule of their own: the kernel keeps a
deprecated SLAAC address until its valid lifetime ends, so the prefix counts as on-link (and new
containers on it are proxied) until then; static addresses have no lifetime and count as long
as they are configured.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv6Address, IPv6Network

from v6gen.model import GATEWAY_MODE_V6, DockerFacts, DockerNetwork, HostFacts, Plan, SubnetCheck


def on_link(address: IPv6Address, prefixes: Iterable[IPv6Network]) -> bool:
    return any(address in p for p in prefixes)


def kept(uplink: str, address: IPv6Address, facts: HostFacts) -> bool:
    """Whether an address outside its uplink's prefixes stays proxied (the grace rule)."""
    return (uplink, address) in facts.proxied_before


def moved_subnet(subnet: IPv6Network, prefixes: Iterable[IPv6Network]) -> IPv6Network | None:
    """`subnet` carried into the first of `prefixes` that can hold it: the same bits below
    that prefix's length (2001:db8:1::a:71a0/125 into 2001:db8:2::/64 is 2001:db8:2::a:71a0/125),
    so the containers keep their interface identifiers."""
    for prefix in prefixes:
        if prefix.prefixlen <= subnet.prefixlen:
            host_bits = int(subnet.network_address) & int(prefix.hostmask)
            base = int(prefix.network_address) | host_bits
            return IPv6Network((base, subnet.prefixlen))
    return None


def fix(net: DockerNetwork, new: IPv6Network | None, uplink: str) -> str:
    if new is None:
        return (
            f"give {uplink} a prefix that can hold the network, or route the network's subnet "
            "to this host"
        )
    mode = net.options.get(GATEWAY_MODE_V6)
    opt = f" -o {GATEWAY_MODE_V6}={mode}" if mode else ""
    opts = f", driver_opts: {{{GATEWAY_MODE_V6}: {mode}}}" if mode else ""
    return (
        f"recreate the network on {new} and give its containers addresses there: `docker "
        f"network rm {net.name} && docker network create --ipv6 --subnet {new}{opt} "
        f"{net.name}`; compose: `networks: {{{net.name}: {{enable_ipv6: true{opts}, ipam: "
        f"{{config: [{{subnet: {new}}}]}}}}}}` (and each service's ipv6_address in {new})"
    )


def _proxied(net: DockerNetwork) -> bool:
    if not net.ipv6 or net.internal or net.driver == "macvlan":
        return False
    return not (net.driver == "ipvlan" and net.options.get("ipvlan_mode", "l2") == "l2")


def subnet_checks(
    docker: DockerFacts,
    facts: HostFacts,
    default: str | None,
    network_uplinks: Mapping[str, str],
) -> tuple[SubnetCheck, ...]:
    """Each IPv6 subnet of the networks v6gen may proxy, against its uplink's prefixes now;
    not those it translates, which follow the prefix by themselves."""
    from v6gen import translate  # it builds on moved_subnet() here

    found = []
    for name, net in sorted(docker.networks.items()):
        uplink = network_uplinks.get(name, default)
        if uplink is None or not _proxied(net) or translate.wanted(net):
            continue
        link = facts.links.get(uplink)
        prefixes = link.prefixes if link is not None else ()
        for subnet in net.subnets:
            if subnet.is_link_local:
                continue
            inside = any(subnet.subnet_of(p) for p in prefixes)
            why = "" if inside else fix(net, moved_subnet(subnet, prefixes), uplink)
            found.append(SubnetCheck(name, subnet, uplink, prefixes, inside, why))
    return tuple(found)


def subnet_line(check: SubnetCheck) -> str:
    have = ", ".join(map(str, check.prefixes)) or "no global prefix"
    where = "inside" if check.inside else "outside"
    return f"{check.subnet} is {where} {check.uplink}'s prefixes ({have})"


def subnet_lines(plan: Plan) -> list[str]:
    """status: every network's subnet against its uplink's prefixes, the fix for one outside."""
    out = []
    for check in plan.subnets:
        out.append(f"network {check.network}: {subnet_line(check)}")
        if not check.inside:
            out.append(f"hint: {check.fix}")
    return out


# (network, container, address) -> (uplink, reached): every proxied address of a plan.
_Reach = dict[tuple[str, str, IPv6Address], tuple[str, bool]]


def _reach(plan: Plan) -> _Reach:
    return {
        (o.network, o.container, e.address): (u.name, not e.offlink)
        for u in plan.uplinks
        for e in u.entries
        for o in e.owners
    }


def _links(host: HostFacts) -> dict[str, tuple[IPv6Network, ...]]:
    return {name: link.prefixes for name, link in host.links.items()}


def reach_changes(before: tuple[Plan, HostFacts], after: tuple[Plan, HostFacts]) -> list[str]:
    """Per network, the containers that lost or regained the LAN's reach because their
    uplink's prefixes changed (containers that started or stopped are said elsewhere)."""
    old, new = _reach(before[0]), _reach(after[0])
    old_links, new_links = _links(before[1]), _links(after[1])
    lost: dict[tuple[str, str, str], list[str]] = {}
    back: dict[tuple[str, str, str], list[str]] = {}
    skipped = {(s.network, s.container, s.address) for s in before[0].skipped}
    for key, (uplink, reached) in sorted(new.items()):
        network, container, address = key
        was = old.get(key)
        gone = [p for p in old_links.get(uplink, ()) if address in p and not reached]
        if was is not None and was[1] and not reached and gone:
            why = f"prefix {', '.join(map(str, gone))} left {uplink}"
            lost.setdefault((network, uplink, why), []).append(f"{container} ({address})")
        came = [p for p in new_links.get(uplink, ()) if address in p]
        unreached = (was is not None and not was[1]) or (
            was is None and (network, container, str(address)) in skipped
        )
        if reached and unreached and came:
            why = f"prefix {', '.join(map(str, came))} is on {uplink} again"
            back.setdefault((network, uplink, why), []).append(f"{container} ({address})")
    lines = []
    for (network, uplink, why), who in sorted(lost.items()):
        now = ", ".join(map(str, new_links.get(uplink, ()))) or "no global prefix"
        lines.append(
            f"docker network {network}: the LAN lost reach of {', '.join(who)}: {why} (it has "
            f"now {now}); their entries stay until the prefix is back or the containers go"
        )
    for (network, _, why), who in sorted(back.items()):
        lines.append(f"docker network {network}: the LAN reaches {', '.join(who)} again: {why}")
    return lines
