"""Frozen value types passed between discover, plan, render and apply."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Endpoint:
    """One container address on one Docker network, as Docker reported it.

    Label values stay raw strings here: deciding whether they are acceptable is the plan's job,
    so hostile values are reported with a reason instead of failing discovery.
    """

    container_id: str
    container: str
    network: str
    address: str
    project: str | None = None
    service: str | None = None
    enable_label: str | None = None
    uplink_label: str | None = None
    published: tuple[int, ...] = ()  # TCP ports published, the container's side of each


@dataclass(frozen=True)
class Owner:
    container: str
    network: str
    project: str | None = None
    service: str | None = None

    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.container, self.network, self.project or "", self.service or "")

    def describe(self) -> str:
        if self.project and self.service:
            return f"{self.container} (compose {self.project}/{self.service})"
        return self.container


@dataclass(frozen=True)
class NetworkdLink:
    """What networkd says about one link."""

    name: str
    index: int
    admin_state: str  # "configured", "unmanaged", "configuring", ...
    network_file: PurePosixPath | None


@dataclass(frozen=True)
class LinkFacts:
    name: str
    exists: bool
    prefixes: tuple[IPv6Network, ...] = ()
    network_file: PurePosixPath | None = None
    managed: bool = False
    # The uplink's own config (main file or a foreign drop-in) already decides IPv6AcceptRA=.
    accept_ra_configured: bool = False
    # LAN hosts with a static, reachable or being-confirmed neighbour entry on the uplink:
    # address -> link-layer address.
    neighbours: Mapping[IPv6Address, str] = field(default_factory=dict)
    admin_state: str = ""  # networkd's AdministrativeState ("configured", "failed", ...)
    # Of `prefixes`, those whose addresses are all deprecated (preferred lifetime over).
    deprecated: tuple[IPv6Network, ...] = ()


class Forwarding(enum.Enum):
    """What the uplink's drop-in says about forwarding, by systemd version. The kernel switches
    themselves (net.ipv6.conf.all.forwarding, and the uplink's own, without which it answers no
    solicitation for a proxied address) are v6gen's sysctls, set at sync and in sysctl.d, on
    every version: networkd's global switches would cost other links their router
    advertisements (networkd.conf's IPv6Forwarding=, v256+) or their IPv4 forwarding
    (IPForward=, one setting for both families before v256, which a drop-in would replace)."""

    SYSCTL_ONLY = "sysctl-only"  # v228..v255: no key
    LINK_KEY = "link-key"  # v256+: IPv6Forwarding=yes, a per-link key; also when the version is
    # unknown, as older versions ignore it with a warning

    @classmethod
    def for_version(cls, version: int | None) -> Forwarding:
        if version is not None and version < 256:
            return cls.SYSCTL_ONLY
        return cls.LINK_KEY


class ProxyKeyName(enum.Enum):
    """The [Network] key that lists proxied addresses in the uplink's drop-in. networkd 262
    renamed IPv6ProxyNDPAddress= to ProxyNeighbor= and still reads the old name; an older
    networkd ignores the new name with a warning, and at its next start (a boot, a downgrade)
    would add none of the entries. So the new name only where the running networkd is known to
    be 262 or later; the old one everywhere else, which every networkd since 233 reads."""

    IPV6_PROXY_NDP_ADDRESS = "IPv6ProxyNDPAddress"
    PROXY_NEIGHBOR = "ProxyNeighbor"

    @classmethod
    def for_version(cls, version: int | None, running: bool) -> ProxyKeyName:
        """`running`: the version is the running networkd's or systemd's (or the admin's word),
        not merely the installed networkctl's, which an upgrade replaces before the daemon."""
        if running and version is not None and version >= 262:
            return cls.PROXY_NEIGHBOR
        return cls.IPV6_PROXY_NDP_ADDRESS


@dataclass(frozen=True)
class HostFacts:
    default_uplink: str | None
    links: Mapping[str, LinkFacts]
    systemd_version: int | None
    # Uplinks with v6gen restore data from an earlier sync: what a passing loss of the default
    # route must not tear down.
    managed_before: frozenset[str] = frozenset()
    # Every link networkd configures, by .network file (empty when networkd can't be asked).
    network_file_links: Mapping[PurePosixPath, frozenset[str]] = field(default_factory=dict)
    # Global addresses this host holds itself -> interface.
    host_addresses: Mapping[IPv6Address, str] = field(default_factory=dict)
    # Docker's IPv6 firewall rules; None when they could not be read.
    ip6_filter: Ip6Filter | None = None
    systemd_version_source: str = ""  # whose version systemd_version is
    # Whether systemd_version is what runs (networkd, PID 1, or the config's word), not only
    # the installed networkctl's.
    systemd_version_running: bool = False
    # What the replay of the host's whole ruleset says of each address, by the address as
    # Docker wrote it (v6gen.pathjudge); None when it was not asked (path_note says why), so
    # Docker's rules alone decide.
    path_verdicts: Mapping[str, Verdict] | None = None
    path_note: str = ""
    path_gatekeepers: tuple[str, ...] = ()  # the gatekeepers found in the rules, Docker aside
    # The proxy entries v6gen owns from earlier syncs (uplink, address): an address among them
    # that its uplink's prefixes no longer cover is kept (v6gen.prefixes, the grace rule).
    proxied_before: frozenset[tuple[str, IPv6Address]] = frozenset()


GATEWAY_MODE_V6 = "com.docker.network.bridge.gateway_mode_ipv6"


@dataclass(frozen=True)
class DockerNetwork:
    """One Docker network as GET /networks describes it."""

    name: str
    driver: str = "bridge"
    ipv6: bool = True
    internal: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    subnets: tuple[IPv6Network, ...] = ()  # IPv6 subnets of its IPAM config
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def gateway_mode(self) -> str:
        """Docker 27+ omits the option in its default mode, and older Dockers know only nat."""
        return self.options.get(GATEWAY_MODE_V6) or "nat"


@dataclass(frozen=True)
class DockerFacts:
    """What the daemon says of itself and its networks: one GET /version, one GET /networks."""

    version: str | None = None  # "28.5.2"
    networks: Mapping[str, DockerNetwork] = field(default_factory=dict)
    engine: str = "Docker"  # "Podman" when /version names the Podman Engine (its compat API)

    @property
    def docker_version(self) -> str | None:
        """The version as Docker's own releases number it: what its firewall does depends on
        it. Podman's (5.4, ...) is another numbering and says nothing of Docker's firewall."""
        return self.version if self.engine == "Docker" else None


@dataclass(frozen=True)
class RawRule:
    """One rule of ip6tables' raw PREROUTING chain, where Docker 28 drops packets routed to a
    container from outside its bridge, before any filter rule (DOCKER-USER included) can act."""

    target: str
    destination: IPv6Network | None = None
    in_iface: str | None = None
    in_negated: bool = False
    # Any match v6gen does not read (-p, -m, ...): the rule may not apply to every packet.
    partial: bool = False

    def decides(self, address: IPv6Address, iface: str) -> bool:
        """Whether every packet to `address` arriving on `iface` meets this rule."""
        if self.partial or (self.destination is not None and address not in self.destination):
            return False
        if self.in_iface is None:
            return True
        matches = iface == self.in_iface or (
            self.in_iface.endswith("+") and iface.startswith(self.in_iface[:-1])
        )
        return matches != self.in_negated


@dataclass(frozen=True)
class Ip6Filter:
    """Docker's part of the host's IPv6 netfilter rules, as `ip6tables-save` shows them."""

    docker_chains: bool  # Docker's ip6tables rules are in force (it made chains of its own)
    raw_prerouting: tuple[RawRule, ...] = ()
    # "filter DOCKER", "nat DOCKER", ...: by name, which docker-ipv6nat shares (v6gen.migrate).
    chains: tuple[str, ...] = ()


class Reach(enum.Enum):
    """What a LAN host can reach of a container address once it is proxied."""

    ALL = "all"  # every port
    PUBLISHED = "published"  # published ports (and ICMPv6 in gateway mode routed) only
    PORTS = "ports"  # some published ports only, named ("ports:80,443")
    ICMP = "icmp"  # ICMPv6 echo and no port
    NONE = "none"  # nothing at all
    UNKNOWN = "unknown"  # the host's rules could not be read or replayed (the why says which)


# Worst first: what doctor and the warnings report for a network with several addresses.
REACH_ORDER = (Reach.NONE, Reach.ICMP, Reach.UNKNOWN, Reach.PORTS, Reach.PUBLISHED, Reach.ALL)


def short_name(reach: Reach, ports: tuple[int, ...] = ()) -> str:
    """The name `status` and `--json` show: all, published, ports:80,443, icmp, none, unknown."""
    if reach is Reach.PORTS:
        return "ports:" + ",".join(str(p) for p in ports)
    return str(reach.value)


@dataclass(frozen=True)
class GateFix:
    """A gatekeeper on the forward path that blocks (some of) what the LAN sends a container,
    and the exact change that lets it through."""

    gatekeeper: str  # "ufw", "firewalld", "nft table inet filter, chain forward", "Docker", ...
    kind: str  # gatekeepers.UFW, FIREWALLD, NFT, DOCKER, PODMAN, IP6TABLES
    fix: str


@dataclass(frozen=True)
class Verdict:
    reach: Reach
    why: str
    ports: tuple[int, ...] = ()  # the reachable ports, for Reach.PORTS
    blockers: tuple[GateFix, ...] = ()

    @property
    def short(self) -> str:
        return short_name(self.reach, self.ports)


@dataclass(frozen=True, order=True)
class BlockedAddress:
    address: IPv6Address
    container: str
    uplink: str


@dataclass(frozen=True)
class Blocked:
    """A Docker network whose containers the LAN cannot reach, whatever v6gen does."""

    network: str
    why: str
    addresses: tuple[BlockedAddress, ...]


@dataclass(frozen=True)
class Gated:
    """A gatekeeper that keeps the LAN from (part of) a network's proxied containers."""

    network: str
    blocker: GateFix
    lan: str  # the worst short name among its addresses
    addresses: tuple[BlockedAddress, ...]
    nothing: bool  # some address gets nothing but ICMPv6 through (exit code 9)


@dataclass(frozen=True)
class ProxyEntry:
    address: IPv6Address
    owners: tuple[Owner, ...]
    reach: Reach = Reach.ALL
    ports: tuple[int, ...] = ()  # the reachable ports, for Reach.PORTS
    # Outside every prefix its uplink has now, kept by the grace rule (v6gen.prefixes): the LAN
    # has no route to it until the prefix is back.
    offlink: bool = False

    @property
    def lan(self) -> str:
        return Reach.NONE.value if self.offlink else short_name(self.reach, self.ports)

    def describe_owners(self) -> str:
        return ", ".join(o.describe() for o in self.owners)


@dataclass(frozen=True)
class UplinkPlan:
    name: str
    network_file: PurePosixPath
    entries: tuple[ProxyEntry, ...]
    set_accept_ra: bool

    @property
    def addresses(self) -> frozenset[IPv6Address]:
        return frozenset(e.address for e in self.entries)


@dataclass(frozen=True)
class Skipped:
    container: str
    network: str
    address: str
    reason: str
    by_choice: bool = False  # opted out or filtered by config: not worth a warning
    held: bool = False  # someone else on the LAN answers for the address (exit 10)


@dataclass(frozen=True)
class UplinkFailure:
    uplink: str
    message: str
    hint: str


@dataclass(frozen=True)
class SubnetCheck:
    """One IPv6 subnet of a Docker network against the current prefixes of the uplink its
    containers are proxied on (v6gen.prefixes)."""

    network: str
    subnet: IPv6Network
    uplink: str
    prefixes: tuple[IPv6Network, ...]  # the uplink's on-link prefixes now
    inside: bool
    fix: str = ""  # how to move the network onto a current prefix, when it is outside


@dataclass(frozen=True)
class Translation:
    """A network whose containers the LAN reaches through 1:1 prefix translation (v6gen.
    translate): `inner` is the network's own subnet, `outer` the same suffixes on a prefix of
    the uplink's."""

    network: str
    uplink: str
    inner: IPv6Network
    outer: IPv6Network
    # False: onto a deprecated prefix, still valid, kept for the LAN's peers that use it (no
    # SNAT: the container's own connections leave from the primary's address).
    primary: bool = True

    def outside(self, address: IPv6Address) -> IPv6Address:
        return self.outer.network_address + (int(address) - int(self.inner.network_address))


@dataclass(frozen=True)
class Plan:
    uplinks: tuple[UplinkPlan, ...]
    forwarding: Forwarding
    proxy_delay: int | None
    skipped: tuple[Skipped, ...] = ()
    failed: tuple[UplinkFailure, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    # Addresses left unproxied because Docker's firewall drops the LAN's packets to them.
    blocked: tuple[Blocked, ...] = ()
    # Proxied addresses a firewall keeps the LAN from (all or some ports), per gatekeeper.
    gated: tuple[Gated, ...] = ()
    proxy_key: ProxyKeyName = ProxyKeyName.IPV6_PROXY_NDP_ADDRESS
    subnets: tuple[SubnetCheck, ...] = ()
    translations: tuple[Translation, ...] = ()
    # Subnets of the networks v6gen serves: DAD ends on their bridges (v6gen.bridges).
    dad_subnets: tuple[IPv6Network, ...] = ()

    def wanted_entries(self) -> frozenset[tuple[str, IPv6Address]]:
        return frozenset((u.name, a) for u in self.uplinks for a in u.addresses)
