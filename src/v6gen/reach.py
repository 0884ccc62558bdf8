"""What the LAN reaches of each container address, from the kernel's answers to the replay
rounds (v6gen.pathprobe), and the fix for each gatekeeper that blocks it. Pure.

Probes per address: an ICMPv6 echo request, a TCP SYN to each published port, and one to a port
nothing published. Classes (their short names are what `status` and `--json` show):
all (the unpublished port passes), published (every published port, not the others),
ports:80,443 (some published ports), icmp (ICMPv6 echo only), none.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from typing import Any

from v6gen import firewall
from v6gen.gatekeepers import DOCKER, FIREWALLD, IP6TABLES, NFT, UFW, Gatekeeper, Round
from v6gen.model import GateFix, Reach, Verdict

ECHO = "echo"
_CLOSED_CANDIDATES = (9, 7, 13, 19, 37, 79)  # well-known ports rarely published: probe one


@dataclass(frozen=True)
class Target:
    address: IPv6Address
    network: str
    bridge: str  # the interface the host routes the address to
    subnet: IPv6Network | None  # the network's subnet holding it: the fix covers it all
    published: tuple[int, ...]  # TCP ports the container publishes (its own side)
    text: str = ""  # the address as Docker wrote it: str(IPv6Address) costs ~10 us a call

    @property
    def wire(self) -> str:
        return self.text or str(self.address)

    @property
    def closed(self) -> int:
        ports = itertools.chain(_CLOSED_CANDIDATES, range(1, 65536))
        return next(p for p in ports if p not in self.published)

    def ports(self) -> list[int]:
        return [*self.published, self.closed]


@dataclass(frozen=True)
class Request:
    uplink: str
    uplink_address: IPv6Interface
    lan_source: IPv6Address
    targets: tuple[Target, ...]

    def to_json(self, rounds: Iterable[Round]) -> dict[str, Any]:
        return {
            "uplink": self.uplink,
            "uplink_address": str(self.uplink_address),
            "lan_source": str(self.lan_source),
            "targets": [
                {"address": t.wire, "bridge": t.bridge, "ports": t.ports()} for t in self.targets
            ],
            "rounds": [
                {"name": r.name, "legacy": r.legacy, "iptables_nft": r.iptables_nft, "nft": r.nft}
                for r in rounds
            ],
        }


Passed = Mapping[int, frozenset[str | int]]  # target index -> probes that came out


def _passed(result: Mapping[str, Any]) -> Passed:
    out: dict[int, set[str | int]] = {}
    for index, probe in result.get("passed", []):
        out.setdefault(int(index), set()).add(probe)
    return {k: frozenset(v) for k, v in out.items()}


def classify(target: Target, passed: frozenset[str | int]) -> tuple[Reach, tuple[int, ...]]:
    if target.closed in passed:
        return Reach.ALL, ()
    open_ports = tuple(p for p in target.published if p in passed)
    if open_ports and open_ports == target.published:
        return Reach.PUBLISHED, open_ports
    if open_ports:
        return Reach.PORTS, open_ports
    return (Reach.ICMP if ECHO in passed else Reach.NONE), ()


def fix(keeper: Gatekeeper, uplink: str, target: Target) -> str:
    """The command that lets the LAN through this gatekeeper to the target's whole network."""
    to, bridge = target.subnet or f"{target.wire}/128", target.bridge
    if keeper.kind == UFW:
        return f"ufw route allow in on {uplink} out on {bridge} to {to}"
    if keeper.kind == NFT and keeper.chain:
        # Both ways: a chain with policy drop also drops the container's replies.
        rule = f"nft insert rule {keeper.table} {keeper.chain}"
        return (
            f'{rule} iifname "{uplink}" oifname "{bridge}" ip6 daddr {to} accept && '
            f'{rule} iifname "{bridge}" oifname "{uplink}" ip6 saddr {to} ct state '
            "established,related accept  # and in the file that loads the table at boot"
        )
    if keeper.kind == FIREWALLD:
        return firewalld_fix(bridge, to, keeper.zone_of(bridge))
    if keeper.kind == DOCKER:
        return firewall.fix_hint(target.network)
    if keeper.kind == IP6TABLES:
        # Both ways, as for nftables: a FORWARD policy DROP also drops the replies.
        tool = keeper.table or "ip6tables"
        return (
            f"{tool} -I FORWARD -i {uplink} -o {bridge} -d {to} -j ACCEPT && {tool} -I FORWARD "
            f"-i {bridge} -o {uplink} -s {to} -m conntrack --ctstate ESTABLISHED,RELATED "
            "-j ACCEPT  # and save them where the rules are loaded at boot"
        )
    return f"let packets from {uplink} to {to} through {keeper.name}"


def firewalld_fix(bridge: str, to: IPv6Network | str, zone: str | None) -> str:
    """A policy (firewalld >= 1.0) from any zone into the bridge's zone for the network's
    addresses; firewalld accepts the replies itself (ct state established). The bridge stays in
    the zone it is in: dockerd started while firewalld runs binds its bridges to zone `docker`
    and fails to set up a network whose bridge another zone holds (ZONE_CONFLICT: measured on
    Debian 12, the network "does not exist" after dockerd's restart). A bridge in no zone
    (firewalld started after dockerd) goes where dockerd would put it, zone `docker`, made as
    dockerd makes it (target ACCEPT) if missing. Each step may run again: the command stays
    the same for every network."""
    cmd, policy = "firewall-cmd --permanent", "--policy=v6gen-lan"
    rule = f'rule family="ipv6" destination address="{to}" accept'
    steps = []
    if zone is None:
        zone = "docker"
        steps += [
            f"{{ {cmd} --info-zone=docker >/dev/null 2>&1 || {{ {cmd} --new-zone=docker && "
            f"{cmd} --zone=docker --set-target=ACCEPT; }}; }}",
            f"{cmd} --zone=docker --add-interface={bridge}",
        ]
    steps += [
        f"{{ {cmd} --info-policy=v6gen-lan >/dev/null 2>&1 || {cmd} --new-policy=v6gen-lan; }}",
        f"{cmd} {policy} --add-ingress-zone=ANY",
        f"{cmd} {policy} --add-egress-zone={zone}",
        f"{cmd} {policy} --add-rich-rule='{rule}'",
        "firewall-cmd --reload",
    ]
    return " && ".join(steps)


_WORDS = {
    Reach.ALL: "every port",
    Reach.PUBLISHED: "its published ports only",
    Reach.ICMP: "ICMPv6 echo only, no port",
    Reach.NONE: "nothing, not even ICMPv6 echo",
}


def _what(reach: Reach, ports: tuple[int, ...]) -> str:
    return _WORDS.get(reach) or "only port(s) " + ", ".join(str(p) for p in ports)


def _why(reach: Reach, ports: tuple[int, ...], blockers: tuple[GateFix, ...]) -> str:
    who = ", ".join(b.gatekeeper for b in blockers)
    return f"the LAN reaches {_what(reach, ports)}" + (f": {who} blocks the rest" if who else "")


def combine(docker: Verdict, path: Verdict | None) -> Verdict:
    """Docker's own verdict (read from its rules, with its fix) where it tells the whole
    story; the replay's where another gatekeeper blocks, or where Docker filters in a way its
    ip6tables rules don't show (its nftables backend)."""
    if path is None or docker.reach is Reach.NONE:
        return docker
    if path.reach is Reach.UNKNOWN:
        # Other gatekeepers' rules are on the path and could not be judged: Docker's verdict
        # alone would claim what nobody checked (a LAN column saying `all` behind ufw).
        return replace(path, why=f"{path.why} (Docker's own rules: {docker.why})")
    others = tuple(b for b in path.blockers if b.kind != DOCKER)
    if others and others == path.blockers:
        return path
    if others:
        # What Docker keeps out is its gateway mode's story, told (and warned of, where it
        # blocks) by its own verdict: named here, the replay would advise a `routed` network
        # to become `routed`.
        blockers = (*docker.blockers, *others)
        return replace(path, why=_why(path.reach, path.ports, blockers), blockers=blockers)
    if docker.reach is not Reach.ALL or path.reach is Reach.ALL:
        return docker
    if not path.blockers:
        return path  # the rules together block it, none alone
    # Docker's nftables backend (29+): no ip6tables chains to read, so the replay says what it
    # lets in; as with its ip6tables rules, that is its gateway mode's doing, not a gatekeeper
    # to warn of, and an address it lets nothing reach is not proxied.
    what = _what(path.reach, path.ports)
    who = ", ".join(b.gatekeeper for b in path.blockers)
    return Verdict(path.reach, f"{who} lets the LAN reach {what}", path.ports)


def _verdict(
    uplink: str,
    t: Target,
    forwards: bool,
    got: frozenset[str | int],
    lost: frozenset[str | int],
    keepers: tuple[Gatekeeper, ...],
    failed: list[str],
) -> Verdict:
    if not forwards:
        return Verdict(Reach.UNKNOWN, "the replay forwards nothing even without rules")
    reach, ports = classify(t, got)
    blockers = tuple(GateFix(k.name, k.kind, fix(k, uplink, t)) for k in keepers)
    why = _why(reach, ports, blockers)
    if lost and not blockers:
        why = "the gatekeepers' rules together block it, none alone" + (
            f" (not judged: {'; '.join(failed)})" if failed else ""
        )
    return Verdict(reach, why, ports, blockers)


def judge(
    request: Request, rounds: list[Round], results: Mapping[str, Mapping[str, Any]]
) -> dict[IPv6Address, Verdict]:
    """One verdict per target address from the rounds' results (pathprobe's "rounds")."""
    empty, whole = results.get("empty", {}), results.get("all", {})
    for name, result in (("empty", empty), ("all", whole)):
        if "error" in result or "passed" not in result:
            why = f"the rules could not be replayed ({name}): {result.get('error', 'no answer')}"
            return {t.address: Verdict(Reach.UNKNOWN, why) for t in request.targets}
    base, alls = _passed(empty), _passed(whole)
    alone = {
        r.gatekeeper: _passed(results.get(r.name, {}))
        for r in rounds
        if r.gatekeeper is not None and "passed" in results.get(r.name, {})
    }
    failed = [
        f"{r.gatekeeper.name}: {results.get(r.name, {}).get('error', 'no answer')}"
        for r in rounds
        if r.gatekeeper is not None and "passed" not in results.get(r.name, {})
    ]
    verdicts: dict[IPv6Address, Verdict] = {}
    # The containers of one network mostly fare alike: one verdict per distinct outcome
    # (judging a no-op sync of 1,000 addresses has a budget of 30 ms).
    seen: dict[tuple[Any, ...], Verdict] = {}
    for i, t in enumerate(request.targets):
        sent: frozenset[str | int] = frozenset([ECHO, *t.ports()])
        forwards = base.get(i) == sent
        got: frozenset[str | int] = alls.get(i, frozenset())
        lost = sent - got
        # What Docker's own rules block is Docker's call (its gateway mode says what it lets
        # in): other gatekeepers are named only for what Docker alone would let through.
        by_docker = frozenset().union(
            *(lost - p.get(i, frozenset()) for k, p in alone.items() if k.kind == DOCKER)
        )
        keepers = tuple(
            k
            for k, passed in alone.items()
            if (lost if k.kind == DOCKER else lost - by_docker) - passed.get(i, frozenset())
        )
        # The network's subnet is one for all its containers (an address outside it is its own).
        alone_subnet = t.address if t.subnet is None else None
        key = (t.network, t.bridge, alone_subnet, t.published, forwards, got, keepers)
        if key not in seen:
            seen[key] = _verdict(request.uplink, t, forwards, got, lost, keepers, failed)
        verdicts[t.address] = seen[key]
    return verdicts
