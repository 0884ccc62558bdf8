"""What other tools already do for the containers v6gen proxies, and the way off them with no
moment in which the LAN loses a container: ndppd, docker-ipv6nat, and proxy entries or
`IPv6ProxyNDPAddress=` / `ProxyNeighbor=` lines someone else wrote (doctor's `migrate` lines).

read() looks (the processes in /proc, ndppd's configuration, the .network files, the
kernel's proxy table, the ip6tables chains doctor's facts hold); findings() is pure. Every way
off starts with v6gen answering beside the old tool, which is harmless: both answer with this
host's own link-layer address.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

from v6gen import discover, state
from v6gen.model import DockerFacts, HostFacts, Ip6Filter, Plan
from v6gen.paths import NETWORK_DIRS, Paths
from v6gen.ports import Kernel, ProxyKey

NDPPD_CONF = "/etc/ndppd.conf"  # ndppd's default, when no -c is given
# docker-ipv6nat's ip6tables chains (robbertkl/docker-ipv6nat, firewall.go): Docker's own names,
# in the filter and nat tables. Docker itself makes them in ip6tables only with its `ip6tables`
# setting on, which is off by default before 27; the earliest ipv6nat releases also made
# DOCKER-ISOLATION, a name Docker has not used since 17.06.
IPV6NAT_CHAINS = (
    "DOCKER", "DOCKER-USER", "DOCKER-ISOLATION", "DOCKER-ISOLATION-STAGE-1",
    "DOCKER-ISOLATION-STAGE-2",
)  # fmt: skip
DOCKER_IP6TABLES_DEFAULT = 27  # the first Docker whose `ip6tables` setting is on by default


@dataclass(frozen=True)
class NdppdRule:
    prefix: IPv6Network
    method: str  # "static", "auto" or "iface NAME" (ndppd's default is static)


@dataclass(frozen=True)
class NdppdProxy:
    iface: str
    rules: tuple[NdppdRule, ...]


@dataclass(frozen=True)
class Ndppd:
    pid: int
    conf: str  # as ndppd was told (-c), a path on the host
    proxies: tuple[NdppdProxy, ...] = ()
    unread: str = ""  # why the configuration could not be read


@dataclass(frozen=True)
class Found:
    ndppd: tuple[Ndppd, ...] = ()
    ipv6nat_pids: tuple[int, ...] = ()
    ip6_chains: tuple[str, ...] = ()  # "filter DOCKER", ... of IPV6NAT_CHAINS
    foreign_lines: tuple[tuple[str, IPv6Address], ...] = ()  # (host path, address)
    kernel: frozenset[ProxyKey] = field(default_factory=frozenset)
    owned: frozenset[ProxyKey] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Finding:
    name: str
    level: str  # "ok" or "warn", as doctor's Level
    message: str
    hint: str = ""


def parse_ndppd(text: str) -> tuple[NdppdProxy, ...]:
    """ndppd.conf's `proxy IFACE { rule PREFIX { static | auto | iface NAME } }` blocks; other
    settings (router, timeout, ttl, keepalive, retries) change no address's owner."""
    words = re.sub(r"#[^\n]*", " ", text).replace("{", " { ").replace("}", " } ").split()
    proxies: list[NdppdProxy] = []
    rules: list[NdppdRule] = []
    iface, prefix, method, depth = "", None, "static", 0
    for i, word in enumerate(words):
        after = words[i + 1] if i + 1 < len(words) else ""
        if word == "{":
            depth += 1
        elif word == "}":
            depth -= 1
            if depth == 1 and prefix is not None:
                rules.append(NdppdRule(prefix, method))
                prefix, method = None, "static"
            elif depth == 0 and iface:
                proxies.append(NdppdProxy(iface, tuple(rules)))
                iface, rules = "", []
        elif depth == 0 and word == "proxy":
            iface = after
        elif depth == 1 and word == "rule":
            try:
                prefix = IPv6Network(after, strict=False)
            except ValueError:
                prefix = None
        elif depth == 2 and word in ("static", "auto"):
            method = word
        elif depth == 2 and word == "iface":
            method = f"iface {after}"
    return tuple(proxies)


def _processes(proc: Path, name: str) -> list[tuple[int, list[str]]]:
    """PIDs and argv of the processes whose program (first or, for scripts, second word)
    is `name`: those this process can see (all of the host's with `pid: host` in a container)."""
    found = []
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            argv = [
                a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")
            ]
        except OSError:
            continue
        if any(Path(a).name == name for a in argv[:2]):
            found.append((int(entry.name), argv))
    return sorted(found)


def _ndppd(paths: Paths, pid: int, argv: list[str]) -> Ndppd:
    conf = NDPPD_CONF
    for i, arg in enumerate(argv):
        if arg == "-c" and i + 1 < len(argv):
            conf = argv[i + 1]
        elif arg.startswith("-c") and len(arg) > 2:
            conf = arg[2:]
    # Its own view first (an ndppd in a container of its own reads its file there), then ours.
    why = ""
    for candidate in (paths.under(f"/proc/{pid}/root") / conf.lstrip("/"), paths.under(conf)):
        try:
            return Ndppd(pid, conf, parse_ndppd(candidate.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or str(e)
    return Ndppd(pid, conf, unread=why)


def chains_of(rules: Ip6Filter | None) -> tuple[str, ...]:
    """docker-ipv6nat's chain names among the host's ip6tables chains, as "TABLE CHAIN"."""
    chains = rules.chains if rules is not None else ()
    return tuple(
        c
        for c in chains
        if c.split(" ")[0] in ("filter", "nat") and c.split(" ")[1] in IPV6NAT_CHAINS
    )


def _foreign_lines(paths: Paths) -> tuple[tuple[str, IPv6Address], ...]:
    ours = set(discover.owned_files(paths))
    found: list[tuple[str, IPv6Address]] = []
    for directory in NETWORK_DIRS:
        base = paths.root / directory
        for f in sorted([*base.glob("*.network"), *base.glob("*.network.d/*.conf")]):
            if f in ours:
                continue
            try:
                text = f.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for value in discover.dropin_addresses(text):
                try:
                    found.append((str(paths.host_path(f)), IPv6Address(value)))
                except ValueError:
                    continue  # ProxyNeighbor= may hold an IPv4 address
    return tuple(found)


def read(paths: Paths, kernel: Kernel, facts: HostFacts, *, live: bool) -> Found:
    """What the host shows of other tools. Without `live` (--root) only the files are read.
    The processes are the root's /proc: the host's own where it is /."""
    lines = _foreign_lines(paths)
    owned = state.owned(paths)
    if not live:
        return Found(foreign_lines=lines, owned=owned)
    proc = paths.under("/proc")
    return Found(
        ndppd=tuple(_ndppd(paths, pid, argv) for pid, argv in _processes(proc, "ndppd")),
        ipv6nat_pids=tuple(pid for pid, _ in _processes(proc, "docker-ipv6nat")),
        ip6_chains=chains_of(facts.ip6_filter),
        foreign_lines=lines,
        kernel=frozenset(kernel.proxy_entries()),
        owned=owned,
    )


def _first_step(wanted: Iterable[ProxyKey], found: Found) -> str:
    missing = [k for k in wanted if k not in found.kernel]
    if missing:
        return "1. `v6gen sync` (its entries answer beside the old ones, with the same MAC)"
    return "1. done: v6gen's entries are in the kernel (`v6gen status`: kernel yes)"


def findings(found: Found, plan: Plan, docker: DockerFacts) -> list[Finding]:
    wanted = plan.wanted_entries()
    out = _ndppd_findings(found, wanted)
    out += _ipv6nat_findings(found, docker)
    out += _foreign_findings(found, wanted)
    return out


def _ndppd_findings(found: Found, wanted: frozenset[ProxyKey]) -> list[Finding]:
    out = []
    for n in found.ndppd:
        where = f"ndppd (pid {n.pid}, {n.conf})"
        if n.unread:
            out.append(
                Finding(
                    "migrate ndppd",
                    "warn",
                    f"{where} is running; its configuration could not be read here: {n.unread}",
                    "see README, Coming from ndppd",
                )
            )
            continue
        covered = sorted(
            (a, p.iface, r)
            for u, a in wanted
            for p in n.proxies
            if p.iface == u
            for r in p.rules
            if a in r.prefix
        )
        if not covered:
            out.append(
                Finding("migrate ndppd", "ok", f"{where}: no rule covers an address v6gen proxies")
            )
            continue
        said = "; ".join(f"rule {r.prefix} ({r.method}) on {i} covers {a}" for a, i, r in covered)
        steps = [
            _first_step({(i, a) for a, i, _ in covered}, found),
            "2. `v6gen status`: each address `in kernel` yes and the LAN column as expected",
            f"3. take those rules out of {n.conf} and restart ndppd, or, with no rule left, "
            "`systemctl disable --now ndppd`",
        ]
        out.append(Finding("migrate ndppd", "warn", f"{where}: {said}", "; ".join(steps)))
    return out


def _docker_major(docker: DockerFacts) -> int | None:
    match = re.match(r"(\d+)\.", docker.docker_version or "")
    return int(match.group(1)) if match else None


def _ipv6nat_findings(found: Found, docker: DockerFacts) -> list[Finding]:
    major = _docker_major(docker)
    own = major is not None and major >= DOCKER_IP6TABLES_DEFAULT
    chains = found.ip6_chains
    if found.ipv6nat_pids:
        seen = f"docker-ipv6nat is running (pid {', '.join(map(str, found.ipv6nat_pids))})"
    elif chains and not own:
        seen = (
            f"ip6tables holds docker-ipv6nat's chains ({', '.join(chains)}), which "
            f"{docker.engine} {docker.version or '(version unknown)'} makes only with Docker's "
            "`ip6tables: true` in /etc/docker/daemon.json, if at all"
        )
    else:
        return []
    steps = (
        "1. give each container a public address from the uplink's prefix (a network whose "
        "subnet lies in it; docker-ipv6nat acts only on fc00::/7 networks and leaves it alone); "
        "2. `v6gen sync`, then `v6gen status`: the LAN column says which ports the LAN reaches; "
        "3. move the AAAA records to the containers' own addresses; "
        "4. stop docker-ipv6nat (`docker rm -f` its container, or its service); "
        "5. remove the ULA network; with Docker's own `ip6tables` off, `systemctl restart "
        "docker` clears the chains it left"
    )
    return [Finding("migrate docker-ipv6nat", "warn", seen, steps)]


def _foreign_findings(found: Found, wanted: frozenset[ProxyKey]) -> list[Finding]:
    addresses = {a for _, a in wanted}
    out = []
    lines = [(f, a) for f, a in found.foreign_lines if a in addresses]
    in_lines = {a for _, a in lines}
    unowned = sorted((found.kernel & wanted) - found.owned, key=lambda k: (k[0], k[1]))
    if lines:
        said = "; ".join(f"{f}: {a}" for f, a in lines)
        steps = (
            f"{_first_step(wanted, found)}; 2. delete those lines and `networkctl reload` "
            "(networkd never deletes a kernel entry it no longer has configured, and v6gen's "
            f"drop-in configures the same address); 3. {HAND_OVER}"
        )
        out.append(Finding("migrate proxy lines", "warn", f"someone else's: {said}", steps))
    entries = [(u, a) for u, a in unowned if a not in in_lines]
    if entries:
        said = ", ".join(f"{a} on {u}" for u, a in entries)
        steps = f"1. stop what adds them (a script, an interfaces post-up line); 2. {HAND_OVER}"
        out.append(Finding("migrate proxy entries", "warn", f"not added by v6gen: {said}", steps))
    return out


# v6gen never claims an entry someone else added first (it would delete it when the container
# goes): the old one goes and v6gen's comes at once, within what the LAN's neighbour caches span.
HAND_OVER = (
    "hand each entry to v6gen: `ip -6 neigh del proxy ADDR dev UPLINK && v6gen sync`; until "
    "then v6gen leaves it in the kernel when its container goes"
)
