"""Docker's IPv6 firewall, read from the host's rules: what a LAN host can reach of a container
address once v6gen proxies it. Pure: parsing `ip6tables-save` and judging one address.

How v6gen decides (measured on Docker 20.10, 26.1 and 28.5; ../README.md, "Docker 27 and later"):
- Docker filters IPv6 only when it made ip6tables chains of its own (DOCKER, DOCKER-USER, ...):
  its version alone can't say, since `ip6tables` is a daemon setting (off by default before 27).
- Docker 28 in gateway mode `nat` drops, in the raw table's PREROUTING chain, every packet to a
  container that does not come in on the container's bridge. The raw table runs before the
  filter table, so nothing the admin adds to DOCKER-USER can let the packet through: the LAN
  reaches nothing. v6gen walks that chain as the kernel would for a packet from the uplink.
- Otherwise Docker's filter rules let the LAN reach published ports (and ICMPv6 in mode
  `routed`), or everything in mode `nat-unprotected`.
"""

from __future__ import annotations

import shlex
from ipaddress import IPv6Address, IPv6Network

from v6gen.model import DockerFacts, DockerNetwork, Ip6Filter, RawRule, Reach, Verdict

# Chains Docker creates in ip6tables' filter table when its ip6tables support is on (20.10 to 28).
_DOCKER_CHAIN_PREFIX = "DOCKER"
_ROUTED = "routed"
_NAT_UNPROTECTED = "nat-unprotected"
_UNREAD = "UNREAD"  # stands for a raw rule v6gen could not read


def _raw_rule(words: list[str]) -> RawRule | None:
    """A rule of `-A PREROUTING ...`, or None for one v6gen can't read (a jump to a chain)."""
    target, destination, iface, negated, partial = "", None, None, False, False
    i, negate = 2, False
    while i < len(words):
        option, value = words[i], words[i + 1] if i + 1 < len(words) else ""
        if option == "!":
            negate, i = True, i + 1
            continue
        if option in ("-j", "--jump"):
            target = value
        elif option in ("-d", "--destination") and not negate:
            try:
                destination = IPv6Network(value, strict=False)
            except ValueError:
                partial = True
        elif option in ("-i", "--in-interface"):
            iface, negated = value, negate
        elif not ((option in ("-m", "--match") and value == "comment") or option == "--comment"):
            partial = True  # a match v6gen does not read: the rule may not meet every packet
        negate, i = False, i + 2
    if target not in ("ACCEPT", "DROP", "RETURN"):
        return None
    return RawRule(target, destination, iface, negated, partial)


def parse_ip6tables_save(text: str) -> Ip6Filter:
    """Docker's chains and the raw PREROUTING rules, from `ip6tables-save` (all tables)."""
    table, docker, raw, chains = "", False, [], []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":") and line[1:].startswith(_DOCKER_CHAIN_PREFIX):
            docker = docker or table == "filter"
            chains.append(f"{table} {line[1:].split()[0]}")
        elif line.startswith("-A PREROUTING") and table == "raw":
            try:
                rule = _raw_rule(shlex.split(line))
            except ValueError:
                rule = None
            # A jump v6gen can't follow ends what it can say about the rules after it.
            raw.append(rule or RawRule(_UNREAD))
    return Ip6Filter(docker, tuple(raw), tuple(chains))


def _raw_target(rules: tuple[RawRule, ...], address: IPv6Address, uplink: str) -> str:
    """The target of the first raw PREROUTING rule that every packet from the LAN meets."""
    for rule in rules:
        if rule.target == _UNREAD:
            return _UNREAD
        if rule.decides(address, uplink):
            return rule.target
    return "ACCEPT"


def judge(
    network: DockerNetwork | None, address: IPv6Address, uplink: str, rules: Ip6Filter | None
) -> Verdict:
    """What the LAN reaches of `address` (on Docker network `network`) through `uplink`."""
    if rules is None:
        return Verdict(Reach.UNKNOWN, "the host's ip6tables rules could not be read")
    if not rules.docker_chains:
        return Verdict(Reach.ALL, "Docker does not filter IPv6 on this host")
    raw = _raw_target(rules.raw_prerouting, address, uplink)
    if raw == _UNREAD:
        return Verdict(Reach.UNKNOWN, "Docker's raw table jumps to a chain v6gen does not read")
    if raw == "DROP":
        return Verdict(
            Reach.NONE,
            "Docker drops every packet to its containers that does not come from the "
            "network's own bridge (com.docker.network.bridge.gateway_mode_ipv6=nat, the "
            "default, on Docker 28 and later; a raw-table rule, so DOCKER-USER can't override "
            "it)",
        )
    mode = network.gateway_mode if network else "nat"
    if mode == _NAT_UNPROTECTED:
        return Verdict(Reach.ALL, "gateway mode nat-unprotected: Docker opens every port")
    if mode == _ROUTED:
        return Verdict(
            Reach.PUBLISHED, "gateway mode routed: Docker lets in ICMPv6 and published ports only"
        )
    return Verdict(Reach.PUBLISHED, f"gateway mode {mode}: Docker lets in published ports only")


def predict(network: DockerNetwork, docker: DockerFacts, rules: Ip6Filter | None) -> Verdict:
    """What the LAN will reach on a network that has no proxied container yet: Docker 28 adds
    its raw drop only with the container, so here its version and the mode decide."""
    if rules is not None and rules.docker_chains and network.gateway_mode == "nat":
        major = _major(docker.docker_version)
        if major is not None and major >= 28:
            return Verdict(
                Reach.NONE,
                f"Docker {docker.version} in gateway mode nat drops every packet to its "
                "containers that does not come from the network's own bridge",
            )
    # Any address stands in for the network: without a raw rule the mode alone decides.
    return judge(network, IPv6Address("::"), "", rules)


def filters_by_default(version: str | None) -> bool:
    """Docker 27.0 turned ip6tables on by default."""
    major = _major(version)
    return major is not None and major >= 27


def _major(version: str | None) -> int | None:
    head = (version or "").split(".", 1)[0]
    return int(head) if head.isdigit() else None


def fix_hint(network: str) -> str:
    option = "com.docker.network.bridge.gateway_mode_ipv6"
    return (
        f"recreate network {network} with the driver option {option}=routed (compose: "
        f"driver_opts: {{{option}: routed}}) to let the LAN reach its published ports and "
        f"ICMPv6, or {option}=nat-unprotected to open every port; for new networks, dockerd's "
        f"--default-network-opt=bridge={option}=routed"
    )
