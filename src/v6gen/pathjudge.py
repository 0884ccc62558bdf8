"""Ask the firewalls about every container address a plan may proxy: the glue between the
facts discover gathered and the replay (adapters.firewalls, reach, gatekeepers)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

from v6gen import gatekeepers, reach, validate
from v6gen.model import DockerFacts, Endpoint, HostFacts
from v6gen.ports import Firewalls

_LAN_HOST = 0x7636  # a host number in the uplink's prefix to send the probes from


def _uplink_address(facts: HostFacts) -> tuple[str, IPv6Interface] | str:
    """(uplink, its address with the on-link prefix length), or why there is none."""
    uplink = facts.default_uplink
    link = facts.links.get(uplink or "")
    if uplink is None or link is None or not link.prefixes:
        return "the uplink has no global prefix"
    for address, dev in sorted(facts.host_addresses.items()):
        prefix = next((p for p in link.prefixes if dev == uplink and address in p), None)
        if prefix is not None:
            return uplink, IPv6Interface(f"{address}/{prefix.prefixlen}")
    return f"{uplink} holds no global address"


def _lan_source(facts: HostFacts, own: IPv6Interface, taken: set[IPv6Address]) -> IPv6Address:
    """A real LAN neighbour if one is known (a rule may match LAN sources), else an unused
    host number of the uplink's prefix."""
    link = facts.links[facts.default_uplink or ""]
    for neighbour in sorted(link.neighbours):
        if neighbour in own.network and neighbour not in taken and neighbour.is_global:
            return neighbour
    host = _LAN_HOST
    while own.network[host] in taken or own.network[host] == own.ip:
        host += 1
    return own.network[host]


def _subnet(docker: DockerFacts, network: str, address: IPv6Address) -> IPv6Network:
    net = docker.networks.get(network)
    for subnet in net.subnets if net else ():
        if address in subnet:
            return subnet
    return IPv6Network(address)


def judge(
    firewalls: Firewalls, endpoints: Iterable[Endpoint], docker: DockerFacts, facts: HostFacts
) -> HostFacts:
    """`facts` with path_verdicts for every address on the default uplink's prefix that the
    host routes to a bridge, or with path_note saying why not."""
    where = _uplink_address(facts)
    if isinstance(where, str):
        return replace(facts, path_note=where)
    uplink, own = where
    candidates: dict[IPv6Address, Endpoint] = {}
    for ep in endpoints:
        address, _ = validate.parse_address(ep.address)
        if address is not None and address in own.network and address != own.ip:
            candidates.setdefault(address, ep)
    if not candidates:
        return facts
    bridges = firewalls.bridges(candidates)
    targets = tuple(
        reach.Target(a, ep.network, bridges[a], _subnet(docker, ep.network, a), ep.published)
        for a, ep in sorted(candidates.items())
        if bridges.get(a) not in (None, uplink)
    )
    if not targets:
        return facts
    rules = firewalls.ruleset()
    rounds = gatekeepers.rounds(rules)
    source = _lan_source(facts, own, {t.address for t in targets})
    request = reach.Request(uplink, own, source, targets)
    answer = firewalls.replay(request.to_json(rounds)).get("rounds", {})
    note = "could not read " + "; ".join(rules.unread) if rules.unread else ""
    keepers = tuple(dict.fromkeys(r.gatekeeper.name for r in rounds if r.gatekeeper))
    return replace(
        facts,
        path_verdicts=reach.judge(request, rounds, answer),
        path_note=note,
        path_gatekeepers=keepers,
    )
