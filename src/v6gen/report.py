"""What the user reads after sync/clean: change lines, problems, and the --json document."""

from __future__ import annotations

from typing import Any

from v6gen import firewall
from v6gen.detect import EngineChoice
from v6gen.engine import Outcome
from v6gen.model import DockerFacts, Plan
from v6gen.paths import Paths
from v6gen.wording import count


def change_lines(outcome: Outcome, paths: Paths) -> list[str]:
    c = outcome.changes
    plan = outcome.plan
    # The translation table changes apart from files and entries (a rule lost to `nft flush`).
    nft = [outcome.translated] if outcome.translated else []
    if c.empty and nft:
        return nft
    if c.empty:
        total = sum(len(u.entries) for u in plan.uplinks)
        return [
            f"up to date: {count(total, 'address', 'addresses')} on "
            f"{count(len(plan.uplinks), 'uplink')}, nothing changed"
        ]
    would = "would " if outcome.dry_run else ""
    owners = {(u.name, e.address): e.describe_owners() for u in plan.uplinks for e in u.entries}
    lines = [
        f"{would}add    {a} on {d}  {owners.get((d, a), '')}".rstrip() for d, a in sorted(c.add)
    ]
    lines += [f"{would}remove {a} on {d}" for d, a in sorted(c.delete)]
    lines += [f"{would}chmod  {m:04o} {paths.host_path(p)}" for p, m in sorted(c.chmod.items())]
    lines += [f"{would}write  {paths.host_path(p)}" for p in sorted(c.write)]
    lines += [f"{would}delete {paths.host_path(p)}" for p in sorted(c.remove)]
    verb = "install" if c.install_hooks else "remove "
    lines += [f"{would}{verb} {paths.host_path(p)}" for p in sorted(c.hook_paths)]
    lines += [f"{would}set    {k.replace('/', '.')}={v}" for k, v in sorted(c.sysctls.items())]
    if c.reload_owed and outcome.dry_run:
        lines.append("would reload systemd-networkd (an earlier run could not)")
    if outcome.result is not None and outcome.result.reloaded:
        lines.append("reloaded systemd-networkd")
    if outcome.dry_run and (diff := c.diff(paths)):
        lines.append(diff)
    return lines + nft


def engine_line(choice: EngineChoice, facts: DockerFacts | None = None) -> str:
    """E.g. Podman 5.8.0 at unix:///run/podman/podman.sock (found its socket; no Docker here)."""
    version = f" {facts.version}" if facts is not None and facts.version else ""
    name = facts.engine if facts is not None else choice.engine
    return f"{name}{version} at {choice.where} ({choice.why})"


def engine_json(choice: EngineChoice, facts: DockerFacts) -> dict[str, Any]:
    return {
        "name": facts.engine,
        "version": facts.version,
        "url": choice.where,
        "chosen_by": choice.why,
        "not_followed": list(choice.unfollowed),
        "rootless_podman": [str(p) for p in choice.rootless],
    }


def blocked_lines(plan: Plan) -> list[str]:
    """One warning and its hint per Docker network whose containers the LAN cannot reach."""
    lines = []
    for b in plan.blocked:
        who = ", ".join(f"{a.address} ({a.container})" for a in b.addresses)
        lines += [
            f"warning: docker network {b.network}: the LAN can reach none of its containers, "
            f"so {who} {'is' if len(b.addresses) == 1 else 'are'} not proxied: {b.why}",
            f"hint: {firewall.fix_hint(b.network)}",
        ]
    return lines


def gated_lines(plan: Plan) -> list[str]:
    """One warning and its fix per gatekeeper and network that keeps the LAN from proxied
    containers (all of them, or some ports)."""
    lines = []
    for g in plan.gated:
        who = ", ".join(f"{a.address} ({a.container})" for a in g.addresses)
        lines += [
            f"warning: {g.blocker.gatekeeper} keeps the LAN from docker network {g.network}: "
            f"LAN reach {g.lan} for {who}",
            f"hint: {g.blocker.fix}",
        ]
    return lines


def gated_keys(plan: Plan) -> frozenset[tuple[str, str]]:
    """(gatekeeper, network) of every warning gated_lines gives."""
    return frozenset((g.blocker.gatekeeper, g.network) for g in plan.gated)


def lifted_lines(before: frozenset[tuple[str, str]], plan: Plan) -> list[str]:
    """For watch, whose warnings otherwise just stop: each gatekeeper that kept the LAN from a
    network at the last sync and no longer does."""
    return [
        f"{gatekeeper} no longer keeps the LAN from docker network {network}"
        for gatekeeper, network in sorted(before - gated_keys(plan))
    ]


def gated_json(plan: Plan) -> list[dict[str, Any]]:
    return [
        {
            "gatekeeper": g.blocker.gatekeeper,
            "kind": g.blocker.kind,
            "network": g.network,
            "lan_reach": g.lan,
            "fix": g.blocker.fix,
            "addresses": [
                {"address": str(a.address), "container": a.container, "uplink": a.uplink}
                for a in g.addresses
            ],
        }
        for g in plan.gated
    ]


def problem_lines(outcome: Outcome, *, verbose: bool) -> list[str]:
    lines = [f"warning: {w}" for w in outcome.warnings]
    lines += blocked_lines(outcome.plan)
    lines += gated_lines(outcome.plan)
    for s in outcome.plan.skipped:
        if not s.by_choice or verbose:
            level = "note" if s.by_choice else "warning"
            lines.append(f"{level}: skipped {s.address} ({s.container}, {s.network}): {s.reason}")
    for f in outcome.plan.failed:
        lines += [f"error: {f.message}", f"hint: {f.hint}"]
    if outcome.result is not None and outcome.result.reload_error:
        lines += [
            f"warning: networkd was not reloaded: {outcome.result.reload_error}",
            "hint: run `networkctl reload` once networkd is reachable; the kernel entries are "
            "already in place",
        ]
    return lines


def to_json(outcome: Outcome, paths: Paths) -> dict[str, Any]:
    plan, c, r = outcome.plan, outcome.changes, outcome.result
    owners = {
        (u.name, e.address): [o.container for o in e.owners]
        for u in plan.uplinks
        for e in u.entries
    }
    return {
        "up_to_date": c.empty,
        "dry_run": outcome.dry_run,
        "uplinks": [
            {
                "name": u.name,
                "network_file": str(u.network_file),
                "addresses": [
                    {
                        "address": str(e.address),
                        "containers": [o.container for o in e.owners],
                        "lan_reach": e.lan,
                    }
                    for e in u.entries
                ],
            }
            for u in plan.uplinks
        ],
        "added": [
            {"uplink": d, "address": str(a), "containers": owners.get((d, a), [])}
            for d, a in sorted(c.add)
        ],
        "removed": [{"uplink": d, "address": str(a)} for d, a in sorted(c.delete)],
        "files_written": sorted(str(paths.host_path(p)) for p in c.write),
        "dirs_tightened": {str(paths.host_path(p)): f"{m:04o}" for p, m in sorted(c.chmod.items())},
        "files_removed": sorted(str(paths.host_path(p)) for p in c.remove),
        "hooks_changed": sorted(str(paths.host_path(p)) for p in c.hook_paths),
        "sysctls": dict(sorted(c.sysctls.items())),
        "reload_owed": c.reload_owed,
        "reloaded": bool(r and r.reloaded),
        "reload_error": r.reload_error if r else None,
        "skipped": [vars(s) for s in plan.skipped],
        "failed_uplinks": [vars(f) for f in plan.failed],
        "blocked_networks": [
            {
                "network": b.network,
                "lan_reach": "none",
                "why": b.why,
                "hint": firewall.fix_hint(b.network),
                "addresses": [
                    {"address": str(a.address), "container": a.container, "uplink": a.uplink}
                    for a in b.addresses
                ],
            }
            for b in plan.blocked
        ],
        "gatekeepers": gated_json(plan),
        "warnings": outcome.warnings,
    }
