"""`v6gen doctor`: every precondition of working NDP proxying, checked one line at a time."""

from __future__ import annotations

import enum
import stat
from dataclasses import dataclass
from pathlib import Path

from v6gen import (
    detect,
    discover,
    engine,
    firewall,
    hostview,
    migrate,
    prefixes,
    report,
    state,
    translate,
    trust,
)
from v6gen.apply import (
    ALL_PROXY_NDP,
    FORWARDING,
    forwarding_key,
    proxy_delay_key,
    proxy_ndp_key,
)
from v6gen.errors import DockerError
from v6gen.model import (
    REACH_ORDER,
    DockerFacts,
    DockerNetwork,
    Gated,
    HostFacts,
    Plan,
    Reach,
    SubnetCheck,
    Translation,
)
from v6gen.paths import DISPATCHER_STATES, HOOK_NAME, Paths
from v6gen.plan import make_plan
from v6gen.wording import count


class Level(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    message: str
    hint: str = ""


def _ok(name: str, message: str) -> Check:
    return Check(name, Level.OK, message)


def run(ctx: engine.Context) -> list[Check]:
    checks: list[Check] = []
    try:
        # One ask of Docker and of the host serves the plan and every check below.
        endpoints, docker, facts, warnings = engine.gather(ctx)
    except DockerError as exc:
        checks.append(Check("docker", Level.FAIL, exc.message, exc.hint))
        return checks + _engine(ctx.adapters.docker.choice(), None)
    checks += _engine(ctx.adapters.docker.choice(), docker)
    plan = make_plan(endpoints, ctx.config, facts, docker)
    networks = {n: net for n, net in docker.networks.items() if net.ipv6}
    version = f" ({docker.engine} {docker.version})" if docker.version else ""
    if networks:
        listed = ", ".join(
            f"{n} ({', '.join(map(str, net.subnets)) or 'no subnet'})"
            for n, net in sorted(networks.items())
        )
        checks.append(_ok("docker", f"reachable{version}; networks with IPv6: {listed}"))
        checks += _docker_networks(docker, networks, facts, plan)
        # Named like the engine's own network lines (`podman network NAME` for netavark's).
        kind = "podman" if docker.engine == detect.PODMAN else "docker"
        checks += [_subnet(c, kind) for c in plan.subnets]
        checks += [
            _ok(f"{kind} network {t.network} translation", line) for t, line in _translated(plan)
        ]
        checks += _gatekeepers(facts, plan)
    else:
        hint = "create one with `enable_ipv6: true` and an IPv6 subnet"
        if docker.engine == detect.PODMAN:
            hint = PODMAN_NETWORK_HINT
        checks.append(
            Check(
                "docker", Level.WARN, f"reachable, but no network has IPv6 enabled{version}", hint
            )
        )
    checks += [Check("networkd", Level.WARN, w, "is systemd-networkd running?") for w in warnings]
    checks += _uplinks(ctx, facts, plan)
    checks += _forwarding(ctx, plan)
    checks += _all_proxy_ndp(ctx, plan)
    checks.append(_systemd(facts))
    checks += _hooks(ctx.paths)
    checks += _hook_data(ctx.paths, plan)
    checks.append(_dispatcher_running())
    checks += _addresses(plan, len(endpoints))
    image = hostview.release_check()
    checks += [Check("image", Level(image[0]), image[1], image[2])] if image else []
    found = migrate.read(ctx.paths, ctx.adapters.kernel, facts, live=ctx.live)
    checks += [
        Check(f.name, Level(f.level), f.message, f.hint)
        for f in migrate.findings(found, plan, docker)
    ]
    return checks


PODMAN_NETWORK_HINT = (
    "`podman network create --ipv6 --subnet` refuses a subnet inside the uplink's on-link prefix "
    '("already used on the host"): write netavark\'s network file '
    "/etc/containers/networks/NAME.json with it instead (README, section Podman)"
)
ROOTLESS_WHY = (
    "rootless Podman's containers live in the user's own network namespace (slirp4netns or "
    "pasta): there is no host-side address of theirs to proxy"
)
ROOTLESS_HINT = (
    "run them with rootful Podman (`sudo podman ...`; its API: `systemctl enable --now "
    "podman.socket`, /run/podman/podman.sock), or publish their ports on the host's address"
)


def _engine(choice: detect.EngineChoice, docker: DockerFacts | None) -> list[Check]:
    """Which engine v6gen asks and why, and the engines it leaves alone (one at a time)."""
    rootless = [str(p) for p in choice.rootless]
    if detect.is_rootless(choice.where):
        setting = "docker_host" if choice.host is not None else "DOCKER_HOST"
        why = f"{setting} names rootless Podman ({choice.where}): {ROOTLESS_WHY}"
        return [Check("engine", Level.FAIL, why, ROOTLESS_HINT)]
    out = []
    if docker is not None:
        out.append(_ok("engine", report.engine_line(choice, docker)))
    elif rootless and choice.why == detect.NOTHING_FOUND:
        why = f"only rootless Podman runs here ({', '.join(rootless)}): {ROOTLESS_WHY}"
        return [Check("engine", Level.FAIL, why, ROOTLESS_HINT)]
    for other in choice.unfollowed:
        out.append(
            Check(
                "engine",
                Level.WARN,
                f"{other} is not followed: v6gen follows one engine, {choice.engine} here, and "
                "leaves the other's containers unproxied (and their entries alone unless v6gen "
                "made them)",
                f"to follow it instead: docker_host: {other.split(' at ', 1)[1]}",
            )
        )
    if rootless:
        why = f"rootless Podman at {', '.join(rootless)} is not followed: {ROOTLESS_WHY}"
        out.append(Check("engine", Level.WARN, why, ROOTLESS_HINT))
    return out


def _docker_networks(
    docker: DockerFacts, networks: dict[str, DockerNetwork], facts: HostFacts, plan: Plan
) -> list[Check]:
    """One line per IPv6 network: what Docker's firewall lets the LAN reach of it."""
    rules = facts.ip6_filter
    if docker.engine == detect.PODMAN and rules is not None and not rules.docker_chains:
        return _podman_networks(networks)
    if rules is None:
        filtering = Check(
            "docker firewall",
            Level.WARN,
            "the host's ip6tables rules could not be read: what the LAN reaches is unknown",
            "run as root; is ip6tables-save installed and working?",
        )
    elif rules.docker_chains:
        filtering = _ok("docker firewall", "Docker filters IPv6 (ip6tables rules of its own)")
    else:
        filtering = _ok("docker firewall", "Docker does not filter IPv6 on this host")
    out = [filtering]
    blocked = {b.network: b for b in plan.blocked}
    reach: dict[str, set[Reach]] = {}
    for uplink in plan.uplinks:
        for entry in uplink.entries:
            for owner in entry.owners:
                reach.setdefault(owner.network, set()).add(entry.reach)
    gated = {g.network: g for g in plan.gated}
    for name, net in sorted(networks.items()):
        check = f"docker network {name}"
        if name in gated and name not in blocked:
            g = gated[name]
            why = f"LAN reach {g.lan} for its containers: {g.blocker.gatekeeper} blocks the rest"
            out.append(Check(check, Level.WARN, why, g.blocker.fix))
            continue
        if name in blocked:
            b = blocked[name]
            who = ", ".join(f"{a.address} ({a.container})" for a in b.addresses)
            why = f"the LAN reaches none of {who}: {b.why}"
            out.append(Check(check, Level.FAIL, why, firewall.fix_hint(name)))
            continue
        if net.internal or net.driver not in ("bridge", ""):
            out.append(_ok(check, f"{net.driver} network{', internal' if net.internal else ''}"))
            continue
        seen = reach.get(name)
        verdict = None if seen else firewall.predict(net, docker, rules)
        if verdict is not None and verdict.reach is Reach.NONE:
            why = f"the LAN will reach none of its containers: {verdict.why}"
            out.append(Check(check, Level.WARN, why, firewall.fix_hint(name)))
            continue
        worst = min(seen or {verdict.reach if verdict else Reach.UNKNOWN}, key=_ORDER.index)
        out.append(_ok(check, f"the LAN reaches {_reach_words(worst, net)}"))
    return out


_ORDER = REACH_ORDER


def _translated(plan: Plan) -> list[tuple[Translation, str]]:
    return list(zip(plan.translations, translate.lines(plan), strict=True))


def _subnet(check: SubnetCheck, kind: str) -> Check:
    """A network left outside its uplink's prefixes (renumbered, or a prefix gone): the LAN
    has no route to it, whatever v6gen proxies."""
    line = prefixes.subnet_line(check)
    name = f"{kind} network {check.network} prefix"
    return _ok(name, line) if check.inside else Check(name, Level.WARN, line, check.fix)


def _gatekeepers(facts: HostFacts, plan: Plan) -> list[Check]:
    """One line per gatekeeper on the forward path (the replay of the host's rules): warn
    where it keeps the LAN from a proxied address, with its fix."""
    if facts.path_verdicts is None:
        if not facts.path_note:
            return []
        return [
            Check(
                "firewalls",
                Level.WARN,
                f"the host's firewalls were not judged ({facts.path_note}): only Docker's own "
                "ip6tables rules were read",
                "run v6gen as root with ip6tables and nft installed",
            )
        ]
    out = []
    if facts.path_note:
        out.append(Check("firewalls", Level.WARN, facts.path_note, "run v6gen as root"))
    unknown = {v.why for v in facts.path_verdicts.values() if v.reach is Reach.UNKNOWN}
    out += [Check("firewalls", Level.WARN, why, "") for why in sorted(unknown)]
    by_keeper: dict[str, list[Gated]] = {}
    for g in plan.gated:
        by_keeper.setdefault(g.blocker.gatekeeper, []).append(g)
    for name in facts.path_gatekeepers:
        if name not in by_keeper:
            out.append(
                _ok(
                    f"gatekeeper {name}",
                    "blocks none of the LAN's packets to proxied addresses "
                    "(Docker's own filter aside)",
                )
            )
    for name, found in sorted(by_keeper.items()):
        for g in found:
            n = len(g.addresses)
            what = f"{n} address{'es' if n != 1 else ''} of docker network {g.network}"
            why = f"keeps the LAN from {what}: LAN reach {g.lan}"
            out.append(Check(f"gatekeeper {name}", Level.WARN, why, g.blocker.fix))
    if not facts.path_gatekeepers:
        out.append(_ok("firewalls", "no IPv6 firewall rules on the forward path"))
    return out


def _podman_networks(networks: dict[str, DockerNetwork]) -> list[Check]:
    """netavark's rules, as measured in the lab with a LAN host's TCP connection to a port
    nothing published (netavark 1.4's ip6tables chains on bookworm, 1.14's and 1.17's nftables
    table on trixie and sid): they accept what is forwarded to a container and drop only invalid
    packets, and never change the FORWARD policy, so only a firewall of the host's own decides.
    Docker's chains beside them are judged as on a Docker host."""
    out = [
        _ok(
            "podman firewall",
            "netavark accepts traffic forwarded to Podman's containers (its rules drop only "
            "invalid packets): the host's own firewall, if any, decides",
        )
    ]
    for name, net in sorted(networks.items()):
        if net.internal or net.driver not in ("bridge", ""):
            kind = f"{net.driver} network{', internal' if net.internal else ''}"
            out.append(_ok(f"podman network {name}", kind))
        else:
            out.append(
                _ok(f"podman network {name}", "the LAN reaches every port of its containers")
            )
    return out


def _reach_words(reach: Reach, net: DockerNetwork) -> str:
    mode = f"gateway mode {net.gateway_mode}"
    if reach is Reach.ALL:
        return f"every port of its containers ({mode})"
    if reach is Reach.PUBLISHED:
        icmp = "ICMPv6 and " if net.gateway_mode == "routed" else ""
        return f"{icmp}published ports of its containers only ({mode})"
    if reach is Reach.PORTS:
        return f"some published ports of its containers only ({mode})"
    if reach is Reach.ICMP:
        return f"ICMPv6 echo of its containers only ({mode})"
    return f"an unknown part of its containers ({mode}; Docker's rules unread)"


def _uplinks(ctx: engine.Context, facts: HostFacts, plan: Plan) -> list[Check]:
    if facts.default_uplink is None:
        return [
            Check(
                "uplink",
                Level.FAIL,
                "no uplink: no IPv6 default route and no 'uplinks'",
                "set uplinks: [IFACE] in /etc/v6gen/config.yaml",
            )
        ]
    out = []
    for name, link in sorted(facts.links.items()):
        if not link.exists:
            out.append(Check(f"uplink {name}", Level.FAIL, "does not exist", "check `ip link`"))
        elif not link.managed or link.network_file is None:
            out.append(
                Check(
                    f"uplink {name}",
                    Level.FAIL,
                    "not managed by systemd-networkd",
                    f"check `networkctl status {name}`",
                )
            )
        elif link.admin_state == "failed":
            # networkd gave up on the link (seen on 247.3 after a quick flap: "Could not set
            # route"): the drop-in is not applied and networkd re-adds no entry after a flap.
            out.append(
                Check(
                    f"uplink {name}",
                    Level.FAIL,
                    f"systemd-networkd failed to configure it ({link.network_file}): v6gen's "
                    "drop-in is not in effect",
                    f"see `networkctl status {name}` and `journalctl -u systemd-networkd`; "
                    f"then `networkctl reconfigure {name}`",
                )
            )
        else:
            prefixes = ", ".join(map(str, link.prefixes)) or "no global prefix"
            out.append(
                _ok(
                    f"uplink {name}",
                    f"managed by networkd via {link.network_file}; on-link {prefixes}",
                )
            )
    kernel = ctx.adapters.kernel
    want = plan.wanted_entries()
    have = {e for e in kernel.proxy_entries() if e[0] in facts.links}
    for uplink in plan.uplinks:
        name = uplink.name
        if kernel.read_sysctl(proxy_ndp_key(name)) != "1":
            out.append(
                Check(
                    f"proxy_ndp {name}",
                    Level.FAIL,
                    "net.ipv6.conf proxy_ndp is off",
                    "run `v6gen sync`",
                )
            )
        else:
            out.append(_ok(f"proxy_ndp {name}", "on"))
        delay = kernel.read_sysctl(proxy_delay_key(name))
        wanted_delay = ctx.config.proxy_delay
        if wanted_delay is not None and delay != str(wanted_delay):
            out.append(
                Check(
                    f"proxy_delay {name}",
                    Level.WARN,
                    f"{delay} (config: {wanted_delay}): proxied answers wait up to "
                    f"{int(delay or 0) * 10} ms",
                    "run `v6gen sync`",
                )
            )
        else:
            out.append(_ok(f"proxy_delay {name}", f"{delay}"))
        ra = kernel.uses_router_advertisements(name)
        accepted = uplink.set_accept_ra or discover.accept_ra_setting(
            ctx.paths, uplink.network_file
        )
        if ra and not accepted:
            out.append(
                Check(
                    f"router advertisements {name}",
                    Level.WARN,
                    "the uplink relies on RA but its config turns IPv6AcceptRA off",
                    "with forwarding on, its SLAAC address and default route may go",
                )
            )
        elif ra:
            out.append(_ok(f"router advertisements {name}", "relied on and still accepted"))
    missing = sorted(want - have)
    stale = sorted((have - want) & state.owned(ctx.paths))
    if missing or stale:
        parts = [f"missing {', '.join(str(a) for _, a in missing)}"] if missing else []
        parts += [f"stale {', '.join(str(a) for _, a in stale)}"] if stale else []
        out.append(Check("kernel entries", Level.FAIL, "; ".join(parts), "run `v6gen sync`"))
    else:
        out.append(
            _ok(
                "kernel entries",
                f"{count(len(want), 'proxy entry', 'proxy entries')}, exactly as planned",
            )
        )
    return out


def _forwarding(ctx: engine.Context, plan: Plan) -> list[Check]:
    kernel = ctx.adapters.kernel
    value = kernel.read_sysctl(FORWARDING)
    if plan.uplinks and value != "1":
        why = "net.ipv6.conf.all.forwarding is 0: proxied neighbour advertisements are not sent"
        return [Check("forwarding", Level.FAIL, why, "run `v6gen sync`")]
    # The kernel answers for a proxied address only on an uplink that forwards itself, whatever
    # "all" says: an admin's IPv6Forwarding=no, or a later sysctl, can turn just it off.
    names = [u.name for u in plan.uplinks]
    off = [n for n in names if kernel.read_sysctl(forwarding_key(n)) == "0"]
    if off:
        keys = ", ".join(f"net.ipv6.conf.{n}.forwarding" for n in off)
        why = (
            f"{keys} {'is' if len(off) == 1 else 'are'} 0: the kernel sends no neighbour "
            "advertisement for proxied addresses there"
        )
        hint = (
            "run `v6gen sync`; if it comes back, look for IPv6Forwarding=no in "
            f"{'its' if len(off) == 1 else 'their'} .network file or in networkd.conf"
        )
        return [Check("forwarding", Level.FAIL, why, hint)]
    on = f", and on {', '.join(names)}" if names else ""
    return [_ok("forwarding", f"net.ipv6.conf.all.forwarding={value}{on}")]


def _all_proxy_ndp(ctx: engine.Context, plan: Plan) -> list[Check]:
    if not plan.uplinks:
        return []
    if ctx.adapters.kernel.read_sysctl(ALL_PROXY_NDP) != "1":
        why = (
            "net.ipv6.conf.all.proxy_ndp is 0: a LAN host re-checking a container with unicast "
            "solicitations gets no answer and must fall back to multicast (some routers drop "
            "traffic meanwhile)"
        )
        return [Check("proxy_ndp all", Level.FAIL, why, "run `v6gen sync`")]
    return [_ok("proxy_ndp all", "on: unicast solicitations for proxied addresses are answered")]


def _systemd(facts: HostFacts) -> Check:
    v, source = facts.systemd_version, facts.systemd_version_source
    if v is None:
        return Check(
            "systemd",
            Level.WARN,
            "version unknown; drop-ins say IPv6Forwarding=yes, which systemd < 256 ignores "
            "with a warning in its log",
            "set systemd_version in the config",
        )
    if v < 248:
        return Check(
            "systemd",
            Level.WARN,
            f"{v} ({source}): may have bug #18378 (proxy entries lost on a link flap; fixed "
            "in 247.4/248 and in Debian's 247.3-4)",
            "keep the dispatcher hooks installed",
        )
    return _ok("systemd", f"{v} ({source}): not affected by bug #18378")


def _hooks(paths: Paths) -> list[Check]:
    out = []
    for base in (paths.packaged_hook_base, paths.local_hook_base):
        found = [d / HOOK_NAME for d in paths.hook_dirs(str(base.relative_to(paths.root)))]
        if not any(p.exists() for p in found):
            continue
        bad = [f"{paths.host_path(p)}: {why}" for p in found for why in [_hook_problem(p)] if why]
        if bad:
            out.append(
                Check(
                    "hooks",
                    Level.FAIL,
                    "; ".join(bad),
                    "networkd-dispatcher skips hooks and dirs not exactly 0755 root:root",
                )
            )
        else:
            out.append(
                _ok(
                    "hooks",
                    f"installed in {paths.host_path(base)} for {', '.join(DISPATCHER_STATES)}",
                )
            )
        return out
    return [
        Check(
            "hooks",
            Level.WARN,
            "no networkd-dispatcher hooks installed",
            "run `v6gen sync` (install_hooks: true) or install the Debian package",
        )
    ]


def _hook_data(paths: Paths, plan: Plan) -> list[Check]:
    """What the dispatcher hook would refuse to read, by its own rules (v6gen.trust)."""
    refused = [
        f"{paths.host_path(f.link.path)}: {f.why}"
        for u in plan.uplinks
        for f in trust.check(trust.restore_chain(paths, u.name))
    ]
    sysctl = [
        f"{paths.host_path(f.link.path)}: {f.why}" for f in trust.check(trust.sysctl_chain(paths))
    ]
    out = []
    if refused:
        why = f"the hook would restore nothing after a link flap: {'; '.join(sorted(set(refused)))}"
        hint = "run `v6gen sync`, which tightens v6gen's own directories or says what to fix"
        out.append(Check("hook data", Level.FAIL, why, hint))
    elif plan.uplinks:
        out.append(_ok("hook data", "root's own and writable by nobody else, as the hook requires"))
    if sysctl and plan.uplinks:
        why = f"the hook would leave proxy_delay alone after a flap: {'; '.join(sysctl)}"
        out.append(Check("hook sysctl", Level.WARN, why, "run `v6gen sync`"))
    return out


def _hook_problem(path: Path) -> str:
    for p in (path.parent, path):
        try:
            st = p.lstat()
        except FileNotFoundError:
            return "missing"
        if stat.S_IMODE(st.st_mode) != 0o755 or st.st_uid != 0 or st.st_gid != 0:
            return f"{p.name} is {stat.S_IMODE(st.st_mode):o} {st.st_uid}:{st.st_gid}"
        if p is path and not stat.S_ISREG(st.st_mode):
            return "not a regular file"
    return ""


def _dispatcher_running() -> Check:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        # Debian runs it as `python3 /usr/bin/networkd-dispatcher ...`: look at the first two.
        if any(
            Path(arg.decode(errors="replace")).name == "networkd-dispatcher"
            for arg in cmdline.split(b"\0")[:2]
        ):
            return _ok("networkd-dispatcher", f"running (pid {proc.name})")
    return Check(
        "networkd-dispatcher",
        Level.WARN,
        "not running: after a link flap on systemd < 248 proxy entries stay lost",
        "apt install networkd-dispatcher",
    )


def _addresses(plan: Plan, total: int) -> list[Check]:
    out = [
        Check("address", Level.WARN, f"{s.address} ({s.container}): {s.reason}")
        for s in plan.skipped
        if not s.by_choice
    ]
    out += [Check(f"uplink {f.uplink}", Level.FAIL, f.message, f.hint) for f in plan.failed]
    if not out:
        out.append(
            _ok(
                "addresses",
                f"{count(total, 'container address', 'container addresses')}, all proxyable",
            )
        )
    return out


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.level is Level.FAIL for c in checks) else 0
