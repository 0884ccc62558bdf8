"""The pipeline every command shares: discover -> plan -> render -> apply."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address
from pathlib import Path

from v6gen import (
    apply,
    claims,
    discover,
    fsutil,
    hooks,
    pathjudge,
    render,
    state,
    translate,
    validate,
)
from v6gen.config import Config
from v6gen.errors import ExitCode
from v6gen.model import DockerFacts, Endpoint, HostFacts, Plan, Reach
from v6gen.paths import Paths
from v6gen.plan import make_plan
from v6gen.ports import DockerSource, Firewalls, Kernel, Networkd, ProxyKey, Translator


@dataclass(frozen=True)
class Adapters:
    docker: DockerSource
    networkd: Networkd
    kernel: Kernel
    # None: only Docker's own ip6tables rules are judged (tests, and where no replay can run).
    firewalls: Firewalls | None = None
    # None: nothing is probed or announced (tests, --root); held addresses are still left out.
    ndp: claims.Prober | None = None
    translator: Translator | None = None  # None: no prefix translation (v6gen.translate)


@dataclass(frozen=True)
class Context:
    config: Config
    paths: Paths
    adapters: Adapters
    live: bool  # False with --root: files only, the running kernel and networkd are left alone
    defer_reload: bool = False  # watch: it reloads networkd itself once a burst has settled


@dataclass(frozen=True)
class Snapshot:
    """What a sync planned from. Watch's fast path plans again from it with one container's
    endpoints brought up to date (make_plan, the same eligibility for everything)."""

    endpoints: tuple[Endpoint, ...]
    host: HostFacts
    docker: DockerFacts
    listed: frozenset[str] = frozenset()  # IDs of the containers Docker listed as running
    listed_on: frozenset[tuple[str, str]] = frozenset()  # (ID, network) of their endpoints


@dataclass
class Outcome:
    plan: Plan
    changes: apply.Changes
    dry_run: bool
    result: apply.Result | None = None
    warnings: list[str] = field(default_factory=list)
    snapshot: Snapshot | None = None
    translated: str | None = None  # what was done to the translation table (v6gen.translate)

    @property
    def exit_code(self) -> ExitCode:
        if self.plan.failed:
            return ExitCode.UPLINK
        if self.result is not None and self.result.reload_error:
            return ExitCode.RELOAD_PENDING
        if self.plan.blocked or any(g.nothing for g in self.plan.gated):
            return ExitCode.FIREWALL
        if any(s.held for s in self.plan.skipped):
            return ExitCode.HELD
        return ExitCode.OK


def _facts(ctx: Context) -> tuple[HostFacts, list[str]]:
    return discover.gather_host(ctx.config, ctx.paths, ctx.adapters.kernel, ctx.adapters.networkd)


def _shared_files_plan(plan: Plan, paths: Paths, owned: Mapping[Path, str]) -> Plan:
    """The plan as render() needs it. An uplink that failed this time keeps what it had in the
    file all uplinks share (sysctl.d); one that never had anything (no restore file of ours)
    must not gain anything there, or a container label naming an unmanaged uplink would change
    the host's configuration."""
    kept = tuple(f for f in plan.failed if paths.restore_file(f.uplink) in owned)
    return plan if kept == plan.failed else replace(plan, failed=kept)


def _sweep_temps(paths: Paths) -> None:
    """Temp files of writes a kill interrupted, in every directory v6gen writes to. The next
    run may have nothing else to do (a kill during the last state save), so this is not left
    to the next write of the same file."""
    dirs = [*paths.etc_network.glob("*.network.d"), paths.networkd_conf_dropin.parent]
    dirs += [paths.sysctl_dropin.parent, paths.state_dir, paths.restore_dir]
    dirs += [hook.parent for hook in hooks.local_hooks(paths)]
    for directory in dirs:
        fsutil.sweep(directory)


def _run(ctx: Context, plan: Plan, warnings: list[str], *, dry_run: bool) -> Outcome:
    if not dry_run:  # only runs that change things hold the lock
        _sweep_temps(ctx.paths)
    owned = discover.owned_files(ctx.paths)  # read once: render's input and apply's baseline
    wanted = render.render(_shared_files_plan(plan, ctx.paths, owned), ctx.paths)
    changes, more = apply.compute(
        plan,
        wanted,
        owned,
        ctx.paths,
        ctx.adapters.kernel,
        live=ctx.live,
        install_hooks=ctx.config.install_hooks,
    )
    outcome = Outcome(plan, changes, dry_run, warnings=[*warnings, *plan.warnings, *more])
    if not dry_run and ctx.live and ctx.adapters.translator is not None:
        # Before the proxy entries: a LAN packet let in by a new entry ahead of its rule would
        # start a conntrack flow without the translation, which later rules never rewrite.
        ruleset = translate.ruleset(plan)
        outcome.translated = apply.translate(plan, ctx.paths, ctx.adapters.translator, ruleset)
    # A state that differs with nothing else to do is saved too: claims left by a sync killed
    # after its kernel change must go, and a damaged or untrusted state file must be replaced
    # now, not at the next unrelated change.
    if not dry_run and (not changes.empty or changes.state != changes.old_state):
        k = ctx.adapters
        outcome.result = apply.execute(
            changes, ctx.paths, k.kernel, k.networkd, live=ctx.live, defer_reload=ctx.defer_reload
        )
        outcome.warnings += outcome.result.warnings
    return outcome


def gather(ctx: Context) -> tuple[list[Endpoint], DockerFacts, HostFacts, list[str]]:
    """Everything a plan is made from: Docker's endpoints and networks, the host's facts, and
    warnings about what could not be asked. Docker first: if it can't be asked, nothing else
    is touched."""
    endpoints = ctx.adapters.docker.endpoints()
    docker = ctx.adapters.docker.facts()
    facts, warnings = _facts(ctx)
    if ctx.live and ctx.adapters.firewalls is not None:
        facts = pathjudge.judge(ctx.adapters.firewalls, endpoints, docker, facts)
    return endpoints, docker, facts, warnings


def plan_from_docker(ctx: Context) -> tuple[Plan, list[Endpoint], list[str]]:
    endpoints, docker, facts, warnings = gather(ctx)
    facts = claims.with_held(facts, claims.load(ctx.paths))
    return make_plan(endpoints, ctx.config, facts, docker), endpoints, warnings


def _claim(
    ctx: Context,
    endpoints: list[Endpoint],
    facts: HostFacts,
    docker: DockerFacts,
    ndp: claims.Prober,
) -> tuple[Plan, frozenset[ProxyKey]]:
    """The plan once every address v6gen does not own yet has been probed (v6gen.claims), and
    the addresses that passed, to be announced with Override once their entries are in."""
    free = make_plan(endpoints, ctx.config, facts, docker)
    wanted = free.wanted_entries()
    ask = wanted - state.owned(ctx.paths) - ctx.adapters.kernel.proxy_entries()
    found = _ask(ctx, ndp, free, ask) if ask else {}
    held = claims.settle(ctx.paths, ask, found, wanted)
    plan = make_plan(endpoints, ctx.config, claims.with_held(facts, held), docker)
    return (plan if held.by else free), frozenset(ask - found.keys())


def _ask(
    ctx: Context, ndp: claims.Prober, plan: Plan, ask: frozenset[ProxyKey]
) -> dict[ProxyKey, str]:
    """Probe as the fast path does, with the entries in: a host claiming the same address at
    this moment then hears this host's kernel too, and both step back, where two probes
    without entries would both pass. Claimed first with the very claim the sync of `plan`
    would record (apply.claimed_state: a crash leaves what a crash of that sync leaves), taken out
    after; the run that follows adds the ones that passed with everything else."""
    paths, kernel = ctx.paths, ctx.adapters.kernel
    owned = discover.owned_files(paths)
    wanted = render.render(_shared_files_plan(plan, paths, owned), paths)
    changes, _ = apply.compute(
        plan, wanted, owned, paths, kernel, live=True, install_hooks=ctx.config.install_hooks
    )
    had_state = paths.state_file.exists()
    state.save(paths.state_file, apply.claimed_state(changes))
    kernel.change_proxy(ask, ())
    try:
        return claims.probe(ndp, ask)
    finally:
        kernel.change_proxy((), ask)
        if had_state:
            state.save(paths.state_file, changes.old_state)
        else:
            paths.state_file.unlink(missing_ok=True)


def sync(
    ctx: Context,
    *,
    dry_run: bool = False,
    starting: Iterable[Endpoint] = (),
    stopped: Iterable[str] = (),
    left: Iterable[tuple[str, str]] = (),
) -> Outcome:
    """Watch's corrections to Docker's listing, which lags behind its events: `starting` are
    endpoints of containers Docker connected to their networks that don't run yet (the listing
    leaves them out), planned as if they ran; `stopped` are IDs of containers that died, which
    the listing may still show as running for a moment (measured: ~0.2 s on dockerd 20.10), and
    `left` (container ID, network) pairs it shows a moment after a `disconnect`. Without them
    this sync would undo what the fast path just did, and a networkd reload of such a drop-in
    would put back an entry the fast path deleted, no longer v6gen's to delete."""
    endpoints, docker, facts, warnings = gather(ctx)
    listed = {e.container_id for e in endpoints}
    listed_on = frozenset((e.container_id, e.network) for e in endpoints)
    dead, gone = set(stopped), set(left)
    endpoints = [
        e
        for e in endpoints
        if e.container_id not in dead and (e.container_id, e.network) not in gone
    ]
    endpoints += [e for e in starting if e.container_id not in listed]
    if ctx.live and not dry_run and ctx.adapters.ndp is not None:
        plan, free = _claim(ctx, endpoints, facts, docker, ctx.adapters.ndp)
    else:
        plan, free = _plan_held(ctx, endpoints, facts, docker), frozenset()
    outcome = _run(ctx, plan, warnings, dry_run=dry_run)
    if ctx.adapters.ndp is not None and outcome.result is not None:
        claims.announce(ctx.adapters.ndp, free & outcome.changes.add)
    outcome.snapshot = Snapshot(tuple(endpoints), facts, docker, frozenset(listed), listed_on)
    return outcome


def _plan_held(
    ctx: Context, endpoints: Iterable[Endpoint], facts: HostFacts, docker: DockerFacts
) -> Plan:
    return make_plan(endpoints, ctx.config, claims.with_held(facts, claims.load(ctx.paths)), docker)


def update_container(
    ctx: Context, snapshot: Snapshot, container_id: str, endpoints: Iterable[Endpoint]
) -> tuple[Outcome, Snapshot]:
    """Watch's fast path, with the lock held: the snapshot of the last sync with this
    container's endpoints replaced by `endpoints` ([] when it is gone), planned by make_plan as
    a sync would, and only this container's kernel entries and restore-file lines changed
    (apply.compute_container). Facts that Docker changes as it sets up a container are read
    again: its network, when the snapshot does not know it, and Docker's ip6tables rules when
    Docker filters IPv6 and the network is in gateway mode nat, where Docker 28 adds a raw-table
    drop per container (in the other modes Docker adds none, and reading the rules costs a
    process start, ~10 ms, before the entry)."""
    mine = tuple(endpoints)
    host, docker = snapshot.host, snapshot.docker
    if any(e.network not in docker.networks for e in mine):
        docker = ctx.adapters.docker.facts()
    rules = host.ip6_filter
    if rules is not None and rules.docker_chains and any(_nat(e, docker) for e in mine):
        host = replace(host, ip6_filter=ctx.adapters.kernel.ip6_filter())
    before = [e for e in snapshot.endpoints if e.container_id == container_id]
    others = [e for e in snapshot.endpoints if e.container_id != container_id]
    updated = replace(snapshot, endpoints=(*others, *mine), host=host, docker=docker)
    plan = make_plan(updated.endpoints, ctx.config, host, docker)
    changes = apply.compute_container(
        plan,
        render.render(plan, ctx.paths),
        ctx.paths,
        ctx.adapters.kernel,
        _addresses(mine),
        _addresses(before),
    )
    outcome = _execute_container(ctx, plan, changes, updated)
    new = changes.add - changes.old_state.owned
    if outcome.result is None or not new or ctx.adapters.ndp is None:
        return outcome, updated
    # Claimed optimistically: the entry is in, the LAN is answered; now ask whether someone
    # else holds it, and take it back at once if so.
    found = claims.probe(ctx.adapters.ndp, new)
    held = claims.settle(ctx.paths, new, found)
    if found:
        host = claims.with_held(host, held)
        updated = replace(updated, host=host)
        plan = make_plan(updated.endpoints, ctx.config, host, docker)
        mine_now = _addresses(mine)
        again = apply.compute_container(
            plan, render.render(plan, ctx.paths), ctx.paths, ctx.adapters.kernel, mine_now,
            mine_now,
        )  # fmt: skip
        outcome = _execute_container(ctx, plan, again, updated)
        outcome.warnings += claims.withdrawn_lines(found)
    claims.announce(ctx.adapters.ndp, new - found.keys())
    return outcome, updated


def _execute_container(
    ctx: Context, plan: Plan, changes: apply.Changes, snapshot: Snapshot
) -> Outcome:
    outcome = Outcome(plan, changes, dry_run=False, snapshot=snapshot)
    if not changes.empty or changes.state != changes.old_state:
        k = ctx.adapters
        outcome.result = apply.execute(
            changes, ctx.paths, k.kernel, k.networkd, live=True, defer_reload=True,
            kernel_first=True,
        )  # fmt: skip
    return outcome


def _nat(endpoint: Endpoint, docker: DockerFacts) -> bool:
    network = docker.networks.get(endpoint.network)
    return network is None or network.gateway_mode == "nat"


def _addresses(endpoints: Iterable[Endpoint]) -> frozenset[IPv6Address]:
    parsed = (validate.parse_address(e.address)[0] for e in endpoints)
    return frozenset(a for a in parsed if a is not None)


def clean(ctx: Context, *, dry_run: bool = False) -> Outcome:
    """Everything v6gen made goes: no uplinks planned means every owned file and entry is stale.
    Docker is not asked; clean must work when it is gone."""
    facts, warnings = _facts(ctx)
    empty = make_plan([], ctx.config, facts)
    outcome = _run(ctx, Plan((), empty.forwarding, None), warnings, dry_run=dry_run)
    if not dry_run:
        claims.save(ctx.paths, claims.Held())  # what someone else held is asked again anyway
    return outcome


@dataclass(frozen=True)
class StatusRow:
    address: str
    uplink: str
    containers: tuple[str, ...]
    networks: tuple[str, ...]
    in_dropin: bool
    in_kernel: bool
    wanted: bool
    lan_reach: str = Reach.UNKNOWN.value  # what the LAN reaches once proxied (short_name)
    # Who blocks the rest, and the fix: [{"gatekeeper": ..., "fix": ...}].
    gatekeepers: tuple[dict[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        in_step = self.wanted == self.in_dropin == self.in_kernel
        return in_step and self.lan_reach not in (Reach.NONE.value, Reach.ICMP.value)


def status(ctx: Context) -> tuple[list[StatusRow], Plan]:
    plan, _, _ = plan_from_docker(ctx)
    in_files: set[tuple[str, IPv6Address]] = set()
    for path, text in discover.owned_files(ctx.paths).items():
        uplink = discover.owned_dropin_uplink(text)
        if uplink is None or path.parent == ctx.paths.restore_dir:
            continue
        for match in discover.dropin_addresses(text):
            address, _ = validate.parse_address(match)
            if address is not None:  # a hand-edited line is reported by doctor, not here
                in_files.add((uplink, address))
    kernel = ctx.adapters.kernel.proxy_entries()
    entries = {(u.name, e.address): e for u in plan.uplinks for e in u.entries}
    blocked: dict[tuple[str, IPv6Address], tuple[list[str], list[str]]] = {}
    for b in plan.blocked:
        for a in b.addresses:
            who, nets = blocked.setdefault((a.uplink, a.address), ([], []))
            who.append(a.container)
            nets.append(b.network)
    keepers: dict[tuple[str, IPv6Address], list[dict[str, str]]] = {}
    for g in plan.gated:
        for a in g.addresses:
            keepers.setdefault((a.uplink, a.address), []).append(
                {"gatekeeper": g.blocker.gatekeeper, "fix": g.blocker.fix}
            )
    owned = state.owned(ctx.paths)
    keys = set(entries) | set(blocked) | in_files | (owned & kernel)
    rows = []
    for uplink, addr in sorted(keys):
        e = entries.get((uplink, addr))
        if e is not None:
            who, nets, reach = (
                [o.container for o in e.owners],
                [o.network for o in e.owners],
                e.lan,
            )
        elif (uplink, addr) in blocked:
            (who, nets), reach = blocked[(uplink, addr)], Reach.NONE.value
        else:
            who, nets, reach = [], [], Reach.UNKNOWN.value
        rows.append(
            StatusRow(
                str(addr),
                uplink,
                tuple(who),
                tuple(sorted(set(nets))),
                (uplink, addr) in in_files,
                (uplink, addr) in kernel,
                e is not None,
                reach,
                tuple(keepers.get((uplink, addr), ())),
            )
        )
    return rows, plan
