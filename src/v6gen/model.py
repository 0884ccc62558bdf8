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


class Forwarding(enum.Enum):
    """Where IPv6 forwarding has to be switched on for the running systemd."""

    LINK = "link"  # IPForward=ipv6 in the drop-in (v228..v255)
    GLOBAL = "global"  # IPv6Forwarding=yes in networkd.conf.d (v256+; IPForward= is ignored)
    BOTH = "both"  # version unknown: write both, each version ignores the one it lacks

    @classmethod
    def for_version(cls, version: int | None) -> Forwarding:
        if version is None:
            return cls.BOTH
        return cls.GLOBAL if version >= 256 else cls.LINK


@dataclass(frozen=True)
class HostFacts:
    default_uplink: str | None
    links: Mapping[str, LinkFacts]
    systemd_version: int | None
    # Uplinks with v6gen restore data from an earlier sync: what a passing loss of the default
    # route must not tear down.
    managed_before: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ProxyEntry:
    address: IPv6Address
    owners: tuple[Owner, ...]

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


@dataclass(frozen=True)
class UplinkFailure:
    uplink: str
    message: str
    hint: str


@dataclass(frozen=True)
class Plan:
    uplinks: tuple[UplinkPlan, ...]
    forwarding: Forwarding
    proxy_delay: int | None
    skipped: tuple[Skipped, ...] = ()
    failed: tuple[UplinkFailure, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def wanted_entries(self) -> frozenset[tuple[str, IPv6Address]]:
        return frozenset((u.name, a) for u in self.uplinks for a in u.addresses)
