"""The side-effect boundaries. The core only sees these Protocols; adapters/ holds the real
implementations and tests substitute fakes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from ipaddress import IPv6Address, IPv6Network
from pathlib import PurePosixPath
from typing import Any, Protocol

from v6gen.detect import EngineChoice
from v6gen.gatekeepers import Ruleset
from v6gen.model import DockerFacts, Endpoint, Ip6Filter, NetworkdLink

ProxyKey = tuple[str, IPv6Address]  # (interface, address)


class DockerSource(Protocol):
    def endpoints(self) -> list[Endpoint]:
        """All IPv6 endpoints of running containers; raises DockerError when Docker can't be asked
        (never returns an empty list for "could not ask")."""
        ...

    def facts(self) -> DockerFacts:
        """The daemon's version and every network (driver, options, internal): one GET
        /networks, whatever the number of containers. Raises DockerError like endpoints()."""
        ...

    def choice(self) -> EngineChoice:
        """Which engine this source asks, where and why (v6gen.detect); its engine is the one
        the daemon named itself once it answered. Never asks the daemon."""
        ...


class ContainerSource(Protocol):
    def starting_endpoints(
        self, container_id: str, network: tuple[str, str] | None = None
    ) -> list[Endpoint]:
        """The IPv6 endpoints of one container that Docker is starting or runs, [] once it is
        gone; `network` (ID, name) is the network a `connect` event named. Raises DockerError
        when Docker can't be asked."""
        ...


class Networkd(Protocol):
    def link(self, name: str) -> NetworkdLink | None:
        """None when networkd does not know the link. Raises NetworkdError when unreachable."""
        ...

    def reload(self) -> str | None:
        """Manager.Reload: re-read .network files and reconfigure links whose files changed.
        Returns a warning when it had to take a detour (e.g. `networkctl reload`)."""
        ...

    def systemd_version(self) -> int | None: ...

    def systemd_version_source(self) -> str:
        """Whose version systemd_version() is ("the running systemd-networkd (pid 42)", ...)."""
        ...

    def systemd_version_running(self) -> bool:
        """Whether systemd_version() is what runs now (networkd itself, or systemd as PID 1),
        not only the installed networkctl, which an upgrade replaces before the daemon restarts."""
        ...

    def network_file_links(self) -> Mapping[PurePosixPath, frozenset[str]]:
        """Every link networkd configures, by the .network file it uses: a drop-in applies to
        all of them. Raises NetworkdError when unreachable."""
        ...


class Kernel(Protocol):
    def default_route_interfaces(self) -> list[str]:
        """Interfaces of IPv6 default routes, best (lowest metric) first."""
        ...

    def link_exists(self, name: str) -> bool: ...

    def link_prefixes(self, name: str) -> tuple[IPv6Network, ...]:
        """On-link global prefixes of the interface (from its global addresses)."""
        ...

    def deprecated_prefixes(self, name: str) -> tuple[IPv6Network, ...]:
        """Those of link_prefixes(name) whose global addresses are all deprecated."""
        ...

    def host_addresses(self) -> Mapping[IPv6Address, str]:
        """Every global IPv6 address this host holds itself -> the interface it is on."""
        ...

    def active_neighbours(self, name: str) -> Mapping[IPv6Address, str]:
        """Neighbours with a static, reachable or being-confirmed entry on the link (not stale
        nor failed), address -> link-layer address ("" when the entry has none)."""
        ...

    def proxy_entries(self) -> set[ProxyKey]: ...

    def change_proxy(self, add: Iterable[ProxyKey], delete: Iterable[ProxyKey]) -> None:
        """Add (idempotently: replace) and delete proxy entries in one batch."""
        ...

    def end_dad(self, subnets: Iterable[IPv6Network]) -> list[str]:
        """No Duplicate Address Detection on the bridges holding the gateways of these subnets
        (v6gen.bridges): what it changed, a line each."""
        ...

    def read_sysctl(self, key: str) -> str | None:
        """key like "net/ipv6/neigh/eth0/proxy_delay"; None when it does not exist."""
        ...

    def write_sysctl(self, key: str, value: str) -> None: ...

    def ip6_filter(self) -> Ip6Filter | None:
        """Docker's IPv6 firewall rules (`ip6tables-save`); no ip6tables at all reads as no
        rules, and None means they could not be read."""
        ...

    def uses_router_advertisements(self, name: str) -> bool:
        """Whether the interface has addresses or routes that came from router advertisements."""
        ...


class Translator(Protocol):
    """The kernel's nftables table of v6gen's prefix translation (v6gen.translate)."""

    def present(self) -> bool:
        """Whether the table is in the kernel."""
        ...

    def load(self, ruleset: str) -> None:
        """`nft -f` of a ruleset that replaces the table as a whole, or deletes it."""
        ...


class Firewalls(Protocol):
    def ruleset(self) -> Ruleset:
        """The host's IPv6 rules as ip6tables-legacy-save, ip6tables-nft-save and `nft list
        ruleset` print them (what could not be read is listed in Ruleset.unread)."""
        ...

    def iptables_nft(self) -> str:
        """ip6tables-nft-save's output, when ruleset() left it out (nft shows those tables)."""
        ...

    def routes(self) -> str:
        """The kernel's IPv6 routes, "<destination hex> <prefix length hex> <device>" a line."""
        ...

    def recall(self, key: str) -> dict[str, Any] | None:
        """What remember() stored under `key` (in this process or an earlier one), or None."""
        ...

    def remember(self, key: str, data: dict[str, Any]) -> None: ...

    def replay(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """v6gen.pathprobe's answer to a request (reach.Request.to_json); failures are answers
        too ({"rounds": {name: {"error": why}}}), never exceptions."""
        ...
