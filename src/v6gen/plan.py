"""Pure planning: which container address is proxied on which uplink, and why others are not."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from ipaddress import IPv6Address, IPv6Network
from pathlib import PurePosixPath

from v6gen import bridges, firewall, prefixes, reach, translate, validate
from v6gen.config import Config
from v6gen.model import (
    REACH_ORDER,
    Blocked,
    BlockedAddress,
    DockerFacts,
    DockerNetwork,
    Endpoint,
    Forwarding,
    Gated,
    GateFix,
    HostFacts,
    LinkFacts,
    Owner,
    Plan,
    ProxyEntry,
    ProxyKeyName,
    Reach,
    Skipped,
    Translation,
    UplinkFailure,
    UplinkPlan,
    Verdict,
)
from v6gen.wording import count

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


@dataclass(frozen=True)
class _Choice:
    uplink: str
    address: IPv6Address
    owner: Owner
    reach: Reach
    ports: tuple[int, ...] = ()
    offlink: bool = False  # kept by the grace rule (v6gen.prefixes)


def _network_excluded(network: DockerNetwork | None) -> str:
    """Why no address on this Docker network is ever proxied, or "". Both are the admin's
    choice of network, so they are notes, not warnings."""
    if network is None:
        return ""
    if network.internal:
        return "internal network: Docker keeps it off the outside world"
    l2 = network.driver == "macvlan" or (
        network.driver == "ipvlan" and network.options.get("ipvlan_mode", "l2") == "l2"
    )
    if l2:
        # The host's answers would race the container's own (the first pings are lost), and
        # what reaches the host has no way on: the parent can't talk to its macvlan children.
        return (
            f"{network.driver} network: the container is on the LAN itself and answers "
            "Neighbour Discovery for its own address"
        )
    return ""


def _usable(link: LinkFacts | None, name: str) -> LinkFacts | UplinkFailure:
    if link is None or not link.exists:
        return UplinkFailure(
            name,
            f"uplink {name} does not exist",
            "check `ip link`, the 'uplinks'/'network_uplinks' config keys and v6gen.uplink labels",
        )
    if link.network_file is None or not link.managed:
        return UplinkFailure(
            name,
            f"uplink {name} is not managed by systemd-networkd",
            f"give it a .network file (or name one in network_files) and check "
            f"`networkctl status {name}`",
        )
    if not link.prefixes:
        # Addresses and routes go while a link is down: a sync in that window must keep what
        # the uplink had, not conclude that no container is on-link any more.
        return UplinkFailure(
            name,
            f"uplink {name} has no global IPv6 address right now; kept as it was",
            f"is {name} down? `ip -6 addr show dev {name}`; the next sync after it is back "
            "updates it",
        )
    return link


def _choose_uplink(
    ep: Endpoint, config: Config, default: str | None, allowed: frozenset[str]
) -> tuple[str | None, str]:
    if ep.uplink_label is not None:
        label = ep.uplink_label
        reason = validate.interface_name(label)
        if reason:
            return None, f"label v6gen.uplink={validate.display(label)!r} is invalid: {reason}"
        if label not in allowed:
            choices = ", ".join(sorted(allowed)) or "none"
            return None, (
                f"label v6gen.uplink={label} names an interface that is not a configured uplink "
                f"(allowed: {choices}); add it to 'uplinks' in the config"
            )
        return label, ""
    if ep.network in config.network_uplinks:
        return config.network_uplinks[ep.network], ""
    if default is None:
        return None, "no uplink: the host has no IPv6 default route and no 'uplinks' configured"
    return default, ""


def _selected(ep: Endpoint, config: Config) -> tuple[str, bool]:
    """(why the endpoint is left out, whether that was the admin's choice), or ("", True)."""
    if config.include_networks and ep.network not in config.include_networks:
        return "network not in include_networks", True
    if config.include_projects and ep.project not in config.include_projects:
        return "compose project not in include_projects", True
    if ep.enable_label is None:
        if config.require_opt_in:
            return "not opted in (require_opt_in: label v6gen.enable=true)", True
        return "", True
    value = ep.enable_label.strip().lower()
    if value in _FALSE:
        return "opted out (label v6gen.enable=false)", True
    if value not in _TRUE:
        shown = validate.display(ep.enable_label)
        return f"label v6gen.enable={shown!r} is neither true nor false", False
    return "", True


def _in_use(address: IPv6Address, uplink: str, link: LinkFacts, facts: HostFacts) -> str:
    """Why someone else already answers for the address, or "": proxying it would make the
    host claim that owner's traffic on the LAN (a container given the router's address, say)."""
    if address in facts.host_addresses:
        return (
            f"this host holds {address} itself (on {facts.host_addresses[address]}): "
            "proxying it would answer for the host's own address"
        )
    if address in link.neighbours:
        lladdr = link.neighbours[address]
        return (
            f"a LAN host answers for it on {uplink}{f' ({lladdr})' if lladdr else ''}: proxying "
            "it would take that host's traffic; give the container another address"
        )
    return ""


def _ipvlan_l3_elsewhere(network: DockerNetwork | None, uplink: str) -> str:
    """An ipvlan L3/L3S container is reached through a proxy entry on its parent, the only
    interface whose packets reach it (measured in User-mode Linux: tests/lab/test_lan_ndp.py).
    On any other uplink the host would answer Neighbour Discovery for a black hole."""
    if network is None or network.driver != "ipvlan":
        return ""
    parent = network.options.get("parent", "")
    if parent == uplink:
        return ""
    if not parent:
        return "ipvlan L3 network without a parent: Docker gives it a dummy link of its own"
    return (
        f"ipvlan L3 network on parent {parent}, not on uplink {uplink}: only {parent} reaches "
        f"it; set v6gen.uplink={parent} or network_uplinks"
    )


def make_plan(
    endpoints: Iterable[Endpoint],
    config: Config,
    facts: HostFacts,
    docker: DockerFacts | None = None,
) -> Plan:
    docker = docker or DockerFacts()
    default = config.uplinks[0] if config.uplinks else facts.default_uplink
    allowed = config.allowed_uplinks(default)
    skipped: list[Skipped] = []
    warnings: list[str] = []
    failures: dict[str, UplinkFailure] = {}
    chosen: dict[IPv6Address, _Choice] = {}
    owners: dict[IPv6Address, list[Owner]] = {}
    blocked: dict[str, tuple[str, list[BlockedAddress]]] = {}
    gated: dict[tuple[str, str], tuple[GateFix, list[tuple[BlockedAddress, Verdict]]]] = {}
    # Why the host's firewalls could not be judged, and for which addresses.
    unjudged: dict[str, set[IPv6Address]] = {}
    translations: dict[tuple[str, IPv6Network], Translation] = {}

    def skip(ep: Endpoint, reason: str, by_choice: bool = False, held: bool = False) -> None:
        skipped.append(
            Skipped(
                validate.display(ep.container),
                validate.display(ep.network),
                validate.display(ep.address, 45),
                reason,
                by_choice,
                held,
            )
        )

    for ep in sorted(endpoints, key=lambda e: (e.container, e.network, e.address)):
        reason, by_choice = _selected(ep, config)
        if reason:
            skip(ep, reason, by_choice)
            continue
        address, reason = validate.parse_address(ep.address)
        if address is None:
            skip(ep, f"address {reason}")
            continue
        network = docker.networks.get(ep.network)
        reason = _network_excluded(network)
        if reason:
            skip(ep, reason, by_choice=True)
            continue
        uplink, reason = _choose_uplink(ep, config, default, allowed)
        if uplink is None:
            if default is None:
                # The default route is gone (link down?), not the containers: keep every uplink
                # v6gen already manages as it is.
                for name in facts.managed_before:
                    failures.setdefault(
                        name,
                        UplinkFailure(
                            name,
                            f"no IPv6 default route right now; uplink {name} kept as it was",
                            "check `ip -6 route show default`, or set 'uplinks' in the config",
                        ),
                    )
            skip(ep, reason)
            continue
        link = _usable(facts.links.get(uplink), uplink)
        if isinstance(link, UplinkFailure):
            failures.setdefault(uplink, link)
            skip(ep, f"uplink {uplink} cannot be managed")
            continue
        path = facts.path_verdicts.get(ep.address) if facts.path_verdicts is not None else None
        if network is not None and translate.wanted(network):
            found = translate.translation(network, address, uplink, link)
            if isinstance(found, str):
                skip(ep, found)
                continue
            translations.setdefault((found.network, found.inner), found)
            # The LAN reaches the container at its translated address; the replay judged its
            # own address, which the raw table (Docker 28's drop) never sees: no path verdict.
            address, path = found.outside(address), None
        offlink = not prefixes.on_link(address, link.prefixes)
        if offlink and not prefixes.kept(uplink, address, facts):
            have = ", ".join(str(p) for p in link.prefixes) or "no global prefix"
            skip(
                ep,
                f"not on-link for {uplink} ({have}): NDP proxying only answers for addresses "
                f"inside the uplink's prefix; route the network to this host or announce it "
                f"by router advertisement instead",
            )
            continue
        reason = _ipvlan_l3_elsewhere(network, uplink)
        if reason:
            skip(ep, reason, by_choice=True)
            continue
        taken = _in_use(address, uplink, link, facts)
        if taken:
            skip(ep, taken, held=address not in facts.host_addresses)
            continue
        # Not proxied when Docker drops everything from the LAN: the host would answer
        # Neighbour Discovery for a black hole, and LAN hosts would time out on an address
        # that looks alive instead of failing at once. Reported per network instead.
        verdict = reach.combine(firewall.judge(network, address, uplink, facts.ip6_filter), path)
        if verdict.reach is Reach.NONE and not verdict.blockers:
            shown = validate.display(ep.network)
            blocked.setdefault(shown, (verdict.why, []))[1].append(
                BlockedAddress(address, validate.display(ep.container), uplink)
            )
            continue
        owner = Owner(
            validate.display(ep.container),
            validate.display(ep.network),
            ep.project and validate.display(ep.project),
            ep.service and validate.display(ep.service),
        )
        if path is not None and path.reach is Reach.UNKNOWN and verdict.reach is Reach.UNKNOWN:
            unjudged.setdefault(path.why, set()).add(address)
        for blocker in verdict.blockers:
            entry = gated.setdefault((blocker.gatekeeper, owner.network), (blocker, []))
            entry[1].append((BlockedAddress(address, owner.container, uplink), verdict))
        previous = chosen.get(address)
        if previous is None:
            chosen[address] = _Choice(uplink, address, owner, verdict.reach, verdict.ports, offlink)
            owners[address] = [owner]
            continue
        owners[address].append(owner)
        where = "" if previous.uplink == uplink else f" (kept on {previous.uplink}, not {uplink})"
        warnings.append(
            f"{address} is used by both {previous.owner.container} and "
            f"{owner.container}: proxied once{where}"
        )

    # Translated addresses on the uplink's deprecated prefixes too, while they are valid.
    for primary in list(translations.values()):
        for extra in translate.still_valid(primary, facts.links[primary.uplink]):
            translations[(extra.network, extra.outer)] = extra
            for addr, choice in list(chosen.items()):
                alias = extra.outer.network_address + (int(addr) - int(primary.outer[0]))
                if addr in primary.outer and alias not in chosen:
                    chosen[alias] = replace(choice, address=alias)
                    owners[alias] = list(owners[addr])

    # A drop-in applies to every link its .network file matches (Name=en*, or a catch-all that
    # also takes Docker's veths): it would proxy, forward and take RAs there too, and one file
    # cannot say "these addresses on eth0, those on eth1".
    by_file: dict[PurePosixPath | None, list[str]] = {}
    for name in sorted({c.uplink for c in chosen.values()}):
        by_file.setdefault(facts.links[name].network_file, []).append(name)
    for network_file, names in by_file.items():
        users = set(names) | set(
            facts.network_file_links.get(network_file, ()) if network_file else ()
        )
        if len(users) > 1:
            for name in names:
                others = ", ".join(sorted(users - {name}))
                failures[name] = UplinkFailure(
                    name,
                    f"{network_file} also configures {others}: a drop-in for {name} would "
                    "apply there too",
                    f"give {name} a .network file of its own (a [Match] Name= for it alone)",
                )
                for addr in [a for a, c in chosen.items() if c.uplink == name]:
                    for owner in owners.pop(addr):
                        skipped.append(
                            Skipped(
                                owner.container,
                                owner.network,
                                str(addr),
                                f"uplink {name} cannot be managed",
                            )
                        )
                    del chosen[addr]

    uplinks: list[UplinkPlan] = []
    for name in sorted({c.uplink for c in chosen.values()}):
        network_file = facts.links[name].network_file
        assert network_file is not None  # _usable() let only links with a file through
        entries = tuple(
            ProxyEntry(
                addr,
                tuple(sorted(set(owners[addr]), key=Owner.sort_key)),
                chosen[addr].reach,
                chosen[addr].ports,
                chosen[addr].offlink,
            )
            for addr in sorted(a for a, c in chosen.items() if c.uplink == name)
        )
        uplinks.append(
            UplinkPlan(
                name,
                network_file,
                entries,
                set_accept_ra=not facts.links[name].accept_ra_configured,
            )
        )
    for why, addresses in sorted(unjudged.items()):
        warnings.append(
            "cannot tell what the host's firewalls let the LAN reach of "
            f"{count(len(addresses), 'proxied address', 'proxied addresses')}: {why}"
        )
    unknown = sum(1 for u in uplinks for e in u.entries if e.reach is Reach.UNKNOWN)
    if unknown and firewall.filters_by_default(docker.docker_version):
        warnings.append(
            f"cannot read the host's ip6tables rules, so whether Docker {docker.version}'s "
            f"firewall lets the LAN reach {count(unknown, 'proxied address', 'proxied addresses')} "
            "is unknown: run v6gen as root, with ip6tables installed"
        )
    version = config.systemd_version or facts.systemd_version
    running = config.systemd_version is not None or facts.systemd_version_running
    return Plan(
        uplinks=tuple(uplinks),
        forwarding=Forwarding.for_version(version),
        proxy_delay=config.proxy_delay,
        skipped=tuple(skipped),
        failed=tuple(failures[k] for k in sorted(failures)),
        warnings=tuple(warnings),
        blocked=tuple(
            Blocked(name, why, tuple(sorted(addrs)))
            for name, (why, addrs) in sorted(blocked.items())
        ),
        gated=_gated(gated, chosen),
        proxy_key=ProxyKeyName.for_version(version, running),
        subnets=prefixes.subnet_checks(docker, facts, default, config.network_uplinks),
        translations=tuple(
            t
            for t in sorted(translations.values(), key=_translation_order)
            if any(u.name == t.uplink for u in uplinks)
        ),
        dad_subnets=bridges.served_subnets([default, *(u.name for u in uplinks)], facts, docker),
    )


def _translation_order(t: Translation) -> tuple[str, bool, IPv6Network]:
    """Per network, the primary first: its address is the one v6gen reports."""
    return (t.network, not t.primary, t.outer)


def _gated(
    found: dict[tuple[str, str], tuple[GateFix, list[tuple[BlockedAddress, Verdict]]]],
    chosen: dict[IPv6Address, _Choice],
) -> tuple[Gated, ...]:
    """Per gatekeeper and network, what it blocks of the addresses proxied (an address dropped
    later, e.g. with its uplink, is not reported)."""
    out = []
    for (_, network), (blocker, seen) in sorted(found.items()):
        kept = [(a, v) for a, v in seen if a.address in chosen]
        if not kept:
            continue
        worst = min((v for _, v in kept), key=lambda v: REACH_ORDER.index(v.reach))
        nothing = any(v.reach in (Reach.ICMP, Reach.NONE) for _, v in kept)
        # Sorted by number: BlockedAddress's own ordering compares IPv6Address objects, ~14 ms
        # for the 1,000 addresses of a host behind ufw.
        addresses = tuple(
            sorted(set(a for a, _ in kept), key=lambda a: (int(a.address), a.container))
        )
        out.append(Gated(network, blocker, worst.short, addresses, nothing))
    return tuple(out)
