"""In-memory stand-ins for the side-effect adapters, recording what the core asked of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import PurePosixPath

from v6gen.detect import EngineChoice
from v6gen.errors import DockerError, NetworkdError
from v6gen.model import DockerFacts, DockerNetwork, Endpoint, Ip6Filter, NetworkdLink
from v6gen.ports import ProxyKey


@dataclass
class FakeDocker:
    items: list[Endpoint] = field(default_factory=list)
    error: DockerError | None = None
    calls: int = 0

    def endpoints(self) -> list[Endpoint]:
        self.calls += 1
        if self.error:
            raise self.error
        return list(self.items)

    networks: dict[str, DockerNetwork] | None = None  # None: a default bridge per network used
    version: str | None = "20.10.24"
    engine: EngineChoice = field(
        default_factory=lambda: EngineChoice("unix:///run/docker.sock", "Docker", "Docker's socket")
    )

    def choice(self) -> EngineChoice:
        return self.engine

    def facts(self) -> DockerFacts:
        if self.error:
            raise self.error
        if self.networks is not None:
            return DockerFacts(self.version, dict(self.networks), self.engine.engine)
        names = sorted({e.network for e in self.items})
        return DockerFacts(self.version, {n: DockerNetwork(n) for n in names}, self.engine.engine)


@dataclass
class FakeNetworkd:
    links: dict[str, NetworkdLink] = field(default_factory=dict)
    version: int | None = 252
    running: bool = True  # the version is the running daemon's (False: networkctl's only)
    reload_error: NetworkdError | None = None
    unreachable: bool = False
    reloads: int = 0

    def link(self, name: str) -> NetworkdLink | None:
        if self.unreachable:
            raise NetworkdError("cannot connect to the system bus", "is dbus running?")
        return self.links.get(name)

    def reload(self) -> str | None:
        if self.reload_error:
            raise self.reload_error
        self.reloads += 1
        return None

    def systemd_version(self) -> int | None:
        if self.unreachable:
            raise NetworkdError("cannot connect to the system bus", "")
        return self.version

    def systemd_version_source(self) -> str:
        return "the fake networkd"

    def systemd_version_running(self) -> bool:
        return self.running

    def network_file_links(self) -> dict[PurePosixPath, frozenset[str]]:
        if self.unreachable:
            raise NetworkdError("cannot connect to the system bus", "is dbus running?")
        found: dict[PurePosixPath, set[str]] = {}
        for name, link in self.links.items():
            if link.network_file is not None:
                found.setdefault(link.network_file, set()).add(name)
        return {f: frozenset(names) for f, names in found.items()}

    def manage(self, name: str, network_file: str, index: int = 2) -> None:
        self.links[name] = NetworkdLink(name, index, "configured", PurePosixPath(network_file))


@dataclass
class FakeKernel:
    routes: list[str] = field(default_factory=lambda: ["uplink0"])
    prefixes: dict[str, tuple[IPv6Network, ...]] = field(
        default_factory=lambda: {"uplink0": (IPv6Network("2001:db8::/64"),)}
    )
    proxy: set[ProxyKey] = field(default_factory=set)
    sysctls: dict[str, str] = field(default_factory=dict)
    batches: list[tuple[frozenset[ProxyKey], frozenset[ProxyKey]]] = field(default_factory=list)
    sysctl_writes: list[tuple[str, str]] = field(default_factory=list)
    ra_links: set[str] = field(default_factory=set)
    own: dict[IPv6Address, str] = field(default_factory=dict)  # host_addresses()
    neighbours: dict[str, dict[IPv6Address, str]] = field(default_factory=dict)
    deprecated: dict[str, tuple[IPv6Network, ...]] = field(default_factory=dict)
    dad_ended: list[tuple[IPv6Network, ...]] = field(default_factory=list)  # end_dad() calls

    # Docker's ip6tables rules; the default is a host where Docker does not filter IPv6.
    filter: Ip6Filter | None = field(default_factory=lambda: Ip6Filter(docker_chains=False))

    def host_addresses(self) -> dict[IPv6Address, str]:
        return dict(self.own)

    def deprecated_prefixes(self, name: str) -> tuple[IPv6Network, ...]:
        return tuple(self.deprecated.get(name, ()))

    def ip6_filter(self) -> Ip6Filter | None:
        return self.filter

    def active_neighbours(self, name: str) -> dict[IPv6Address, str]:
        return dict(self.neighbours.get(name, {}))

    def uses_router_advertisements(self, name: str) -> bool:
        return name in self.ra_links

    def default_route_interfaces(self) -> list[str]:
        return list(self.routes)

    def link_exists(self, name: str) -> bool:
        return name in self.prefixes

    def link_prefixes(self, name: str) -> tuple[IPv6Network, ...]:
        return self.prefixes.get(name, ())

    def proxy_entries(self) -> set[ProxyKey]:
        return set(self.proxy)

    def change_proxy(self, add: Iterable[ProxyKey], delete: Iterable[ProxyKey]) -> None:
        add, delete = frozenset(add), frozenset(delete)
        self.batches.append((add, delete))
        self.proxy = (self.proxy - delete) | add

    def end_dad(self, subnets: Iterable[IPv6Network]) -> list[str]:
        self.dad_ended.append(tuple(subnets))
        return []

    def read_sysctl(self, key: str) -> str | None:
        if key in self.sysctls:
            return self.sysctls[key]
        dev = key.split("/")[3] if key.count("/") >= 4 else None
        if dev is not None and dev != "all" and dev not in self.prefixes:
            return None
        return {"proxy_delay": "80"}.get(key.rsplit("/", 1)[1], "0")

    def write_sysctl(self, key: str, value: str) -> None:
        self.sysctl_writes.append((key, value))
        self.sysctls[key] = value


def ep(
    container: str = "seed-probe-1",
    address: str = "2001:db8::a:71a5",
    network: str = "seed_probe-network",
    **labels: str | None,
) -> Endpoint:
    return Endpoint(
        container_id=f"id-{container}",
        container=container,
        network=network,
        address=address,
        project=labels.get("project", "seed"),
        service=labels.get("service", "probe"),
        enable_label=labels.get("enable"),
        uplink_label=labels.get("uplink"),
    )


def addr(text: str) -> IPv6Address:
    return IPv6Address(text)


@dataclass
class FakeTranslator:
    """The kernel's nftables table of v6gen's translation: what the last `nft -f` left."""

    loaded: list[str] = field(default_factory=list)
    table: bool = False

    def present(self) -> bool:
        return self.table

    def load(self, ruleset: str) -> None:
        self.loaded.append(ruleset)
        self.table = "\ntable ip6 v6gen {\n" in ruleset
