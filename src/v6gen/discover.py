"""Discover: Docker's container list and the host's links, turned into model values.

Parsing is pure (tested on JSON captured from a real dockerd); the adapters fetch."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Mapping
from ipaddress import IPv6Network
from pathlib import Path, PurePosixPath
from typing import Any

from v6gen import state, validate
from v6gen.config import Config
from v6gen.errors import DockerError, NetworkdError
from v6gen.model import DockerNetwork, Endpoint, HostFacts, LinkFacts
from v6gen.paths import NETWORK_DIRS, OWNED_NAME, Paths
from v6gen.ports import Kernel, Networkd

ENABLE_LABEL = "v6gen.enable"
UPLINK_LABEL = "v6gen.uplink"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _object(value: Any, what: str, container: str) -> Mapping[str, Any]:
    """A JSON object of Docker's answer ({} for null). Anything else means the answer is not
    what dockerd writes: DockerError, so that nothing is changed on the strength of it."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DockerError(
            f"Docker's container list is malformed: {what} of {validate.display(container)} "
            f"is a {type(value).__name__}, not an object",
            "is something other than dockerd answering on docker_host?",
        )
    return value


def _endpoints(
    c: Mapping[str, Any], address_of: Callable[[str, Mapping[str, Any]], Any]
) -> list[Endpoint]:
    """One container's endpoints; `address_of(network name, its endpoint settings)` says which
    address each network gives it."""
    names = c.get("Names") or []
    cid = str(c.get("Id", ""))
    name = names[0].lstrip("/") if names and isinstance(names[0], str) else cid[:12]
    labels = _object(c.get("Labels"), "Labels", name)
    settings = _object(c.get("NetworkSettings"), "NetworkSettings", name)
    networks = _object(settings.get("Networks"), "NetworkSettings.Networks", name)
    found: list[Endpoint] = []
    for net_name, net in networks.items():
        what = f"network {validate.display(str(net_name))}"
        address = address_of(str(net_name), _object(net, what, name))
        if not isinstance(address, str) or not address:
            continue
        found.append(
            Endpoint(
                container_id=cid,
                container=name,
                network=str(net_name),
                address=address,
                project=_str_or_none(labels.get(PROJECT_LABEL)),
                service=_str_or_none(labels.get(SERVICE_LABEL)),
                enable_label=_str_or_none(labels.get(ENABLE_LABEL)),
                uplink_label=_str_or_none(labels.get(UPLINK_LABEL)),
                published=_published(c.get("Ports")),
            )
        )
    return found


def _published(ports: Any) -> tuple[int, ...]:
    """The container's side of its published TCP ports (GET /containers/json's Ports: exposed
    ports carry no PublicPort): what a LAN host connects to at the container's own address."""
    found: set[int] = set()
    for p in ports if isinstance(ports, list) else []:
        if isinstance(p, dict) and p.get("Type") == "tcp" and p.get("PublicPort"):
            private = p.get("PrivatePort")
            if isinstance(private, int) and 0 < private < 65536:
                found.add(private)
    return tuple(sorted(found))


def endpoints_from_list(containers: Iterable[Mapping[str, Any]]) -> list[Endpoint]:
    """Endpoints from the body of GET /containers/json, which already carries every network's
    GlobalIPv6Address: no per-container inspect is needed."""
    found: list[Endpoint] = []
    for c in containers:
        # A paused container keeps its address and comes back without a start event.
        if c.get("State", "running") not in ("running", "paused"):
            continue
        found += _endpoints(c, lambda _, net: net.get("GlobalIPv6Address"))
    return found


def starting_endpoints(
    container: Mapping[str, Any], assigned: Mapping[str, str] | None = None
) -> list[Endpoint]:
    """The endpoints of one container that dockerd is starting (or runs), from its entry in
    GET /containers/json?all=1&filters={"id": [ID]}. dockerd sets up a container's networks,
    and says so with a network `connect` event, before the container runs (measured: ~600 ms
    before on dockerd 20.10, ~20 ms on 28.5); meanwhile that entry says "created" (or "exited"
    when it is started again) and has no GlobalIPv6Address yet, so an endpoint's address is its
    GlobalIPv6Address, else its static one (IPAMConfig), else the one `assigned` names for that
    network (GET /networks/ID's Containers, without the prefix length). GET /containers/ID/json
    would say more, but waits until the container runs: it takes the container's lock."""
    if container.get("State") in ("removing", "dead"):
        return []
    given = assigned or {}

    def address_of(network: str, net: Mapping[str, Any]) -> Any:
        ipam = net.get("IPAMConfig")
        static = ipam.get("IPv6Address") if isinstance(ipam, dict) else None
        return net.get("GlobalIPv6Address") or static or given.get(network)

    return _endpoints(container, address_of)


def assigned_address(network: Any, container_id: str) -> str | None:
    """The IPv6 address GET /networks/ID (`network`, its body) has given the container, or
    None: dockerd lists the network's endpoints there as soon as they exist."""
    containers = network.get("Containers") if isinstance(network, dict) else None
    entry = containers.get(container_id) if isinstance(containers, dict) else None
    address = entry.get("IPv6Address") if isinstance(entry, dict) else None
    if not isinstance(address, str) or not address:
        return None
    return address.split("/", 1)[0]


def _mapping(value: Any) -> Mapping[Any, Any]:
    return value if isinstance(value, dict) else {}


def networks_from_list(networks: Iterable[Any]) -> dict[str, DockerNetwork]:
    """Networks by name from the body of GET /networks. Malformed entries are left out: a
    container on an unknown network is judged as on a default one, never refused for it."""
    found: dict[str, DockerNetwork] = {}
    for net in networks:
        if not isinstance(net, dict) or not isinstance(net.get("Name"), str):
            continue
        options = net.get("Options")
        ipam = net.get("IPAM")
        configs = ipam.get("Config") if isinstance(ipam, dict) else None
        subnets = []
        for config in configs if isinstance(configs, list) else ():
            subnet = config.get("Subnet") if isinstance(config, dict) else None
            if isinstance(subnet, str) and ":" in subnet:
                with contextlib.suppress(ValueError):
                    subnets.append(IPv6Network(subnet, strict=False))
        found[net["Name"]] = DockerNetwork(
            net["Name"],
            driver=str(net.get("Driver") or ""),
            ipv6=net.get("EnableIPv6") is True,
            internal=net.get("Internal") is True,
            options={str(k): str(v) for k, v in _mapping(options).items()},
            subnets=tuple(subnets),
            labels={str(k): str(v) for k, v in _mapping(net.get("Labels")).items()},
        )
    return found


_ACCEPT_RA = re.compile(r"\s*(?:IPv6AcceptRA|IPv6AcceptRouterAdvertisements)\s*=\s*(\S*)", re.ASCII)
_YES = frozenset({"yes", "true", "on", "1"})


def _accept_ra_in(text: str) -> bool | None:
    """The IPv6AcceptRA= that an INI text's [Network] section sets last, or None."""
    section, value = "", None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped
        elif section == "[Network]" and (m := _ACCEPT_RA.match(line)):
            value = m.group(1).lower() in _YES
    return value


def accept_ra_setting(paths: Paths, network_file: PurePosixPath) -> bool | None:
    """IPv6AcceptRA= as the link's main file and the drop-ins that are not ours decide it
    (drop-ins in lexical order after the main file, as networkd reads them), or None."""
    candidates = [paths.under(str(network_file))]
    dropins: dict[str, Path] = {}
    for directory in reversed(NETWORK_DIRS):  # a same-named drop-in in /etc masks /usr's
        folder = paths.root / directory / f"{network_file.name}.d"
        if folder.is_dir():
            dropins.update({p.name: p for p in folder.glob("*.conf")})
    candidates += [dropins[name] for name in sorted(dropins)]
    own = paths.dropin(network_file.name)
    value = None
    for path in candidates:
        if path == own:
            continue
        try:
            found = _accept_ra_in(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        value = found if found is not None else value
    return value


def accept_ra_configured(paths: Paths, network_file: PurePosixPath) -> bool:
    """True when the link's main file or a drop-in that is not ours decides IPv6AcceptRA=."""
    return accept_ra_setting(paths, network_file) is not None


def gather_host(
    config: Config, paths: Paths, kernel: Kernel, networkd: Networkd
) -> tuple[HostFacts, list[str]]:
    """Facts about every interface the plan may use, plus warnings (e.g. networkd unreachable)."""
    warnings: list[str] = []
    routes = kernel.default_route_interfaces()
    default = config.uplinks[0] if config.uplinks else (routes[0] if routes else None)
    links: dict[str, LinkFacts] = {}
    networkd_down = False
    for name in sorted(config.allowed_uplinks(default)):
        if not kernel.link_exists(name):
            links[name] = LinkFacts(name, exists=False)
            continue
        managed, network_file, admin_state = False, None, ""
        if not networkd_down:
            try:
                info = networkd.link(name)
            except NetworkdError as exc:
                networkd_down = True
                warnings.append(f"cannot ask networkd about links: {exc.message}")
            else:
                if info is not None:
                    network_file, admin_state = info.network_file, info.admin_state
                    managed = info.admin_state not in ("unmanaged", "") and network_file is not None
        if name in config.network_files:
            # The admin's word wins: networkd may be unreachable or mid-reconfiguration.
            network_file, managed = PurePosixPath(config.network_files[name]), True
        links[name] = LinkFacts(
            name,
            exists=True,
            prefixes=kernel.link_prefixes(name),
            network_file=network_file,
            managed=managed,
            accept_ra_configured=network_file is not None
            and accept_ra_configured(paths, network_file),
            neighbours=kernel.active_neighbours(name),
            admin_state=admin_state,
            deprecated=kernel.deprecated_prefixes(name),
        )
    users: Mapping[PurePosixPath, frozenset[str]] = {}
    if not networkd_down and any(link.managed for link in links.values()):
        try:
            users = networkd.network_file_links()
        except NetworkdError as exc:
            warnings.append(f"cannot ask networkd which links share a .network file: {exc.message}")
    version, source, running = config.systemd_version, "systemd_version in the config", True
    if version is None:
        try:
            version, source = networkd.systemd_version(), networkd.systemd_version_source()
            running = networkd.systemd_version_running()
        except NetworkdError:
            version, source, running = None, "nothing: networkd could not be asked", False
    before = frozenset(p.stem for p in paths.restore_dir.glob("*.proxy"))
    own = kernel.host_addresses() if links else {}
    rules = kernel.ip6_filter() if links else None
    facts = HostFacts(
        default, links, version, before, users, own, rules, source, running,
        proxied_before=state.owned(paths),
    )  # fmt: skip
    return facts, warnings


# Either name of networkd's list of proxied addresses: ProxyNeighbor= since 262, and
# IPv6ProxyNDPAddress=, which 262 still reads and v6gen writes for older networkds (and wrote for
# every networkd before), so drop-ins from before an upgrade hold it.
_PROXY_ADDRESS = re.compile(
    r"^\s*(?:IPv6ProxyNDPAddress|ProxyNeighbor)\s*=\s*(\S+)\s*$", re.MULTILINE
)


def dropin_addresses(text: str) -> list[str]:
    """The values of a .network drop-in's proxied-address lines, under either key name, as
    written (ProxyNeighbor= may also hold IPv4 addresses: callers parse and filter)."""
    return _PROXY_ADDRESS.findall(text)


def owned_dropin_uplink(text: str) -> str | None:
    """The uplink recorded in one of our drop-ins' headers."""
    for line in text.splitlines()[:3]:
        if line.startswith("# v6gen-uplink: "):
            return line.split(": ", 1)[1].strip()
    return None


def owned_files(paths: Paths) -> dict[Path, str]:
    """Every file on disk that v6gen wrote: our exact names AND our header (a same-named file
    someone else wrote is not ours, and is never replaced or removed)."""
    from v6gen.render import HEADER

    candidates = list(paths.etc_network.glob(f"*.network.d/{OWNED_NAME}"))
    candidates += [paths.networkd_conf_dropin, paths.sysctl_dropin]
    candidates += list(paths.restore_dir.glob("*.proxy"))
    found: dict[Path, str] = {}
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # absent, or unreadable and so certainly not something we wrote
        if text.startswith(HEADER):
            found[path] = text
    return found
