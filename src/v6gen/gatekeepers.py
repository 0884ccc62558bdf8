"""Who filters the forward path, and the replay rounds that ask the kernel about each. Pure.

The host's IPv6 rules come from up to three places, all in force at once: ip6tables-legacy,
ip6tables-nft (its tables live in nftables but are replayed through ip6tables-nft-restore,
which knows their xt matches) and the other nftables tables. A gatekeeper is whoever wrote a
part of them: ufw (its ufw6-* chains, and the built-in chains' policies when it is there),
Docker (DOCKER* chains, or its own nftables tables), firewalld, Podman's netavark, any other
nftables table with IPv6 in its family, and the admin's own ip6tables rules.

The whole ruleset decides what passes (an ACCEPT in Docker's chain ends the FORWARD chain
before ufw's rules are reached); each gatekeeper's rules alone say who blocks it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

UFW, DOCKER, FIREWALLD, PODMAN, NFT, IP6TABLES = (
    "ufw",
    "Docker",
    "firewalld",
    "Podman",
    "nft",
    "ip6tables",
)
_NFT_FAMILIES = ("ip6", "inet")  # the families whose hooks see IPv6 packets being routed
# A table ip6tables-nft made (named as ip6tables' tables), as `nft list ruleset` shows it.
IPTABLES_NFT_TABLE = re.compile(r"^table ip6 (filter|nat|mangle|raw|security) \{", re.M)
_TABLE = re.compile(r"^table (\S+) (\S+) \{")
_CHAIN = re.compile(r"^\s*chain (\S+) \{")
_HOOK = re.compile(r"type filter hook (\w+) priority [^;]+;(?:\s*policy (\w+);)?")
# Standard priority names as numbers (ip, ip6 and inet families; nft(8), "STANDARD PRIORITY NAMES"):
# nft 1.0.6 (Debian 12) refuses `hook output priority dstnat`, which newer nft prints for
# Docker 29's tables; the replay may run another nft than the one that printed the rules
# (a newer release's rules, or a container image's tools).
_PRIORITIES = {
    "raw": -300,
    "mangle": -150,
    "dstnat": -100,
    "filter": 0,
    "security": 50,
    "srcnat": 100,
}
_NAMED_PRIORITY = re.compile(
    r"\bpriority (raw|mangle|dstnat|filter|security|srcnat)(?: ([+-]) (\d+))?;"
)
# firewalld's forward dispatch for an interface bound to a zone, as 1.3 (`goto filter_FWD_docker`),
# 2.3 (`jump filter_FWD_trusted`) and 2.5 (`jump filter_FWD_trusted_dispatch_stage2`) write it
# (tests/fixtures/firewalld-zones/); an interface in no zone has no such rule.
_FWD_ZONE = re.compile(
    r'^\s*iifname "([^"]+)" (?:oifname "[^"]+" )?(?:goto|jump) '
    r"filter_FWD_(?!policy_)([\w-]+?)(?:_dispatch_stage2)?$",
    re.M,
)


@dataclass(frozen=True)
class Ruleset:
    """The host's IPv6 rules as each tool prints them ("" when that tool has none or is not
    installed), and what could not be read."""

    legacy: str = ""  # ip6tables-legacy-save
    iptables_nft: str = ""  # ip6tables-nft-save
    nft: str = ""  # nft list ruleset
    unread: tuple[str, ...] = ()  # e.g. "nft list ruleset: permission denied"

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.legacy, self.iptables_nft, self.nft, *self.unread):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()


_COUNTERS = re.compile(r"\[\d+:\d+\]")
_NFT_COUNTER = re.compile(r"counter packets \d+ bytes \d+")
_EXPIRES = re.compile(r" expires [0-9hmsd]+")


def normalize(text: str) -> str:
    """The rules without what changes while they stay the same: the save tools' "# Generated
    ... on <date>" lines, packet counters, set elements' remaining lifetimes. Both the replay
    and the cache key use this text."""
    lines = (ln for ln in text.splitlines() if not ln.startswith("#"))
    out = "\n".join(
        _EXPIRES.sub("", _NFT_COUNTER.sub("counter", _COUNTERS.sub("[0:0]", ln))) for ln in lines
    )
    return out + "\n" if out else ""


@dataclass(frozen=True)
class Gatekeeper:
    kind: str  # UFW, DOCKER, FIREWALLD, PODMAN, NFT, IP6TABLES
    name: str  # as the user knows it: "ufw", "nft table inet filter, chain forward", ...
    table: str = ""  # nftables: "inet filter"; ip6tables rules: the tool that edits them
    chain: str = ""  # nftables: the forward hook's base chain
    # firewalld: (interface, zone) for the interfaces bound to a zone, from its own rules
    zones: tuple[tuple[str, str], ...] = ()

    def zone_of(self, interface: str) -> str | None:
        return next((z for i, z in self.zones if i == interface), None)


@dataclass(frozen=True)
class Round:
    """One replay: the rules to load in a fresh namespace; `gatekeeper` None for the whole."""

    name: str
    legacy: str = ""
    iptables_nft: str = ""
    nft: str = ""
    gatekeeper: Gatekeeper | None = None


def _ipt_owner(chain: str) -> str | None:
    if chain.startswith(("ufw6-", "ufw-")):
        return UFW
    if chain.startswith("DOCKER"):
        return DOCKER
    return None


def _ipt_rule_owner(words: list[str]) -> str:
    """Whose is `-A CHAIN ...`: the chain's owner, else the owner of the chain it jumps to."""
    owner = _ipt_owner(words[1]) if len(words) > 1 else None
    for i, word in enumerate(words[:-1]):
        if owner is None and word in ("-j", "--jump", "-g", "--goto"):
            owner = _ipt_owner(words[i + 1])
    return owner or IP6TABLES


def _ipt_owners(save: str) -> tuple[set[str], str]:
    """The gatekeepers with rules in one ip6tables world, and who owns the built-in policies:
    ufw sets them when enabled, Docker 27+ sets FORWARD to DROP when there is no ufw."""
    owners: set[str] = set()
    chains: set[str] = set()
    for line in save.splitlines():
        if line.startswith(":"):
            chains.add(line[1:].split()[0])
        elif line.startswith("-A "):
            owners.add(_ipt_rule_owner(line.split()))
    policy = IP6TABLES
    if any(_ipt_owner(c) == UFW for c in chains):
        policy = UFW
    elif any(_ipt_owner(c) == DOCKER for c in chains) and ":FORWARD DROP" in save:
        policy = DOCKER
    if re.search(r"^:(INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) DROP", save, re.M):
        owners.add(policy)
    return owners, policy


def _ipt_only(save: str, owner: str, policy_owner: str) -> str:
    """`save` with only `owner`'s rules; built-in policies not its own become ACCEPT."""
    out = []
    for line in save.splitlines():
        if line.startswith(":") and policy_owner != owner:
            name, policy, *rest = line[1:].split()
            line = f":{name} {'ACCEPT' if policy != '-' else '-'} {' '.join(rest)}".rstrip()
        elif line.startswith("-A ") and _ipt_rule_owner(line.split()) != owner:
            continue
        out.append(line)
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class NftTable:
    family: str
    name: str
    text: str
    forward_chain: str = ""  # the base chain on the forward hook, if any
    forward_policy: str = ""  # its policy ("drop", "accept")


def nft_tables(ruleset: str, iptables_tables: frozenset[str]) -> list[NftTable]:
    """The tables of `nft list ruleset` that see routed IPv6 packets, those ip6tables-nft made
    left out (`iptables_tables`: "ip6 filter", ...): they are replayed as ip6tables rules."""
    tables: list[NftTable] = []
    current: list[str] | None = None
    head: re.Match[str] | None = None
    for line in ruleset.splitlines():
        if current is None:
            head = _TABLE.match(line)
            if head and head.group(1) in _NFT_FAMILIES:
                current = [line]
            continue
        current.append(line)
        if line == "}":
            assert head is not None
            family, name = head.group(1), head.group(2)
            if f"{family} {name}" not in iptables_tables:
                text = _NAMED_PRIORITY.sub(_priority_number, "\n".join(current) + "\n")
                tables.append(_with_hooks(family, name, text))
            current = None
    return tables


def _priority_number(m: re.Match[str]) -> str:
    offset = int(m.group(3) or 0) * (-1 if m.group(2) == "-" else 1)
    return f"priority {_PRIORITIES[m.group(1)] + offset};"


def _with_hooks(family: str, name: str, text: str) -> NftTable:
    chain = ""
    for line in text.splitlines():
        if m := _CHAIN.match(line):
            chain = m.group(1)
        elif (m := _HOOK.search(line)) and m.group(1) == "forward":
            return NftTable(family, name, text, chain, m.group(2) or "accept")
    return NftTable(family, name, text)


def nft_gatekeeper(table: NftTable) -> Gatekeeper:
    where = f"{table.family} {table.name}"
    if table.family == "inet" and table.name == "firewalld":
        zones: dict[str, str] = {}
        for interface, zone in _FWD_ZONE.findall(table.text):
            zones.setdefault(interface, zone)
        return Gatekeeper(FIREWALLD, "firewalld", where, table.forward_chain, tuple(zones.items()))
    if table.name.startswith("docker"):
        return Gatekeeper(DOCKER, f"Docker (nft table {where})", where, table.forward_chain)
    if table.name == "netavark":
        return Gatekeeper(PODMAN, f"Podman's netavark (nft table {where})", where)
    chain = f", chain {table.forward_chain}" if table.forward_chain else ""
    return Gatekeeper(NFT, f"nft table {where}{chain}", where, table.forward_chain)


def _save_tables(save: str) -> frozenset[str]:
    return frozenset(f"ip6 {line[1:].strip()}" for line in save.splitlines() if line[:1] == "*")


def rounds(rules: Ruleset) -> list[Round]:
    """The empty ruleset (what the sandbox forwards at all), the whole, then each gatekeeper's
    rules alone."""
    tables = nft_tables(rules.nft, _save_tables(rules.iptables_nft))
    found = [
        Round("empty"),
        Round("all", rules.legacy, rules.iptables_nft, "".join(t.text for t in tables)),
    ]
    for world, save in (("legacy", rules.legacy), ("iptables_nft", rules.iptables_nft)):
        owners, policy = _ipt_owners(save)
        for owner in sorted(owners):
            only = _ipt_only(save, owner, policy)
            # The tool that edits this world's rules, for the fix: ip6tables-legacy or ip6tables.
            tool = "ip6tables-legacy" if world == "legacy" else "ip6tables"
            keeper = Gatekeeper(owner, owner if owner != IP6TABLES else f"{tool} rules", tool)
            if world == "legacy":
                found.append(Round(f"{world}:{owner}", legacy=only, gatekeeper=keeper))
            else:
                found.append(Round(f"{world}:{owner}", iptables_nft=only, gatekeeper=keeper))
    for t in tables:
        found.append(Round(f"nft:{t.family} {t.name}", nft=t.text, gatekeeper=nft_gatekeeper(t)))
    return found
