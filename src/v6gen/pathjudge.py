"""Ask the firewalls about every container address a plan may proxy: the glue between the
facts discover gathered and the replay (adapters.firewalls, reach, gatekeepers).

A no-op sync must stay cheap (30 ms for 1,000 containers): the verdicts are stored under a
digest of everything they depend on (the rules, the routes, the uplink's address, and each
endpoint's address, network and published ports), and reused while none of it changed; the
addresses are then not even parsed (ipaddress costs ~10 us a call).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from typing import Any

from v6gen import gatekeepers, reach, validate
from v6gen.model import DockerFacts, Endpoint, GateFix, HostFacts, Reach, Verdict
from v6gen.ports import Firewalls

_LAN_HOST = 0x7636  # the host number in the uplink's prefix the probes come from
_VERSION = "1"  # of the stored form below


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


def _lan_source(own: IPv6Interface, taken: set[IPv6Address]) -> IPv6Address:
    """A fixed host number of the uplink's prefix (not a live neighbour: the verdicts must
    not change with the neighbour cache), past any address in use."""
    host = _LAN_HOST
    while own.network[host] in taken or own.network[host] == own.ip:
        host += 1
    return own.network[host]


def route_devices(text: str) -> list[tuple[IPv6Network, str]]:
    """(destination, device) of routes.routes() lines, longest prefix first; the default
    route and unreachable ones ("lo" with no prefix) left out."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) != 3 or int(words[1], 16) == 0:
            continue
        try:
            net = IPv6Network((int(words[0], 16), int(words[1], 16)), strict=False)
        except ValueError:
            continue
        found.append((net, words[2]))
    return sorted(found, key=lambda route: -route[0].prefixlen)


def _subnets(docker: DockerFacts) -> dict[str, tuple[IPv6Network, ...]]:
    return {name: net.subnets for name, net in docker.networks.items()}


def _targets(
    endpoints: Iterable[Endpoint], docker: DockerFacts, own: IPv6Interface, routes: str, uplink: str
) -> tuple[reach.Target, ...]:
    """Every endpoint address on the uplink's prefix that the host routes to another link."""
    table = route_devices(routes)
    subnets = _subnets(docker)
    found: dict[IPv6Address, reach.Target] = {}
    for ep in endpoints:
        address, _ = validate.parse_address(ep.address)
        if address is None or address not in own.network or address == own.ip or address in found:
            continue
        dev = next((d for net, d in table if address in net), None)
        if dev is None or dev == uplink:
            continue
        subnet = next((s for s in subnets.get(ep.network, ()) if address in s), None)
        found[address] = reach.Target(address, ep.network, dev, subnet, ep.published, ep.address)
    return tuple(found[a] for a in sorted(found))


def _digest(
    rules: gatekeepers.Ruleset, routes: str, own: IPv6Interface, endpoints: Iterable[Endpoint]
) -> str:
    h = hashlib.sha256(f"{_VERSION}\0{rules.digest()}\0{routes}\0{own}\0".encode())
    h.update("\n".join(f"{e.address} {e.network} {e.published}" for e in endpoints).encode())
    return h.hexdigest()


def _store(verdicts: Mapping[str, Verdict], keepers: tuple[str, ...], note: str) -> dict[str, Any]:
    distinct = list(dict.fromkeys(verdicts.values()))
    number = {v: i for i, v in enumerate(distinct)}
    return {
        "verdicts": [
            [
                v.reach.value,
                v.why,
                list(v.ports),
                [[b.gatekeeper, b.kind, b.fix] for b in v.blockers],
            ]
            for v in distinct
        ],
        "addresses": {a: number[v] for a, v in verdicts.items()},
        "keepers": list(keepers),
        "note": note,
    }


def _load(stored: Mapping[str, Any]) -> tuple[dict[str, Verdict], tuple[str, ...], str]:
    distinct = [
        Verdict(Reach(r), why, tuple(ports), tuple(GateFix(*b) for b in blockers))
        for r, why, ports, blockers in stored["verdicts"]
    ]
    verdicts = {a: distinct[i] for a, i in stored["addresses"].items()}
    return verdicts, tuple(stored["keepers"]), str(stored["note"])


def judge(
    firewalls: Firewalls, endpoints: list[Endpoint], docker: DockerFacts, facts: HostFacts
) -> HostFacts:
    """`facts` with path_verdicts (by the address as Docker wrote it) for every address on the
    default uplink's prefix that the host routes to a bridge, or path_note saying why not."""
    where = _uplink_address(facts)
    if isinstance(where, str):
        return replace(facts, path_note=where)
    uplink, own = where
    rules, routes = firewalls.ruleset(), firewalls.routes()
    key = _digest(rules, routes, own, endpoints)
    stored = firewalls.recall(key)
    if stored is not None:
        try:
            verdicts, keepers, note = _load(stored)
        except (KeyError, ValueError, TypeError, IndexError):
            stored = None  # another version's or a damaged file: judge again
    if stored is None:
        if not rules.iptables_nft and gatekeepers.IPTABLES_NFT_TABLE.search(rules.nft):
            rules = replace(rules, iptables_nft=firewalls.iptables_nft())
        verdicts, keepers, note = _judge(firewalls, endpoints, docker, own, uplink, rules, routes)
        if all(v.reach is not Reach.UNKNOWN for v in verdicts.values()):
            # A failed replay may pass (a tool missing for a moment): asked again next time.
            firewalls.remember(key, _store(verdicts, keepers, note))
    return replace(facts, path_verdicts=verdicts, path_note=note, path_gatekeepers=keepers)


def _judge(
    firewalls: Firewalls,
    endpoints: list[Endpoint],
    docker: DockerFacts,
    own: IPv6Interface,
    uplink: str,
    rules: gatekeepers.Ruleset,
    routes: str,
) -> tuple[dict[str, Verdict], tuple[str, ...], str]:
    targets = _targets(endpoints, docker, own, routes, uplink)
    rounds = gatekeepers.rounds(rules)
    note = "could not read " + "; ".join(rules.unread) if rules.unread else ""
    # Docker's own rules have doctor lines of their own (per network, with its fix).
    keepers = tuple(
        dict.fromkeys(
            r.gatekeeper.name
            for r in rounds
            if r.gatekeeper and r.gatekeeper.kind != gatekeepers.DOCKER
        )
    )
    if not targets:
        return {}, keepers, note
    whole = next(r for r in rounds if r.name == "all")
    if not (whole.legacy or whole.iptables_nft or whole.nft):
        # No IPv6 rules anywhere on the path: nothing to ask the kernel (and no process to
        # start on the many hosts without a host firewall).
        clear = Verdict(Reach.ALL, "no IPv6 firewall rules on the forward path")
        return {t.wire: clear for t in targets}, keepers, note
    source = _lan_source(own, {t.address for t in targets})
    request = reach.Request(uplink, own, source, targets)
    answer = firewalls.replay(request.to_json(rounds)).get("rounds", {})
    by_address = reach.judge(request, rounds, answer)
    return {t.wire: by_address[t.address] for t in targets}, keepers, note
