"""Command line. Imports only typer at start-up: docker, dbus-next, jinja2 and yaml load when a
command needs them, so `--help` stays fast."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from v6gen import __version__
from v6gen.errors import ExitCode, V6genError

if TYPE_CHECKING:
    from v6gen.config import Config
    from v6gen.engine import Adapters, Context, Outcome
    from v6gen.paths import Paths

HELP = """Make Docker containers with global IPv6 addresses reachable from the LAN.

v6gen reads the containers' addresses from Docker, proxies Neighbour Discovery for them on the
host's uplink (systemd-networkd drop-ins plus the kernel's proxy table) and keeps both in step.

Typical use: `docker compose up -d && sudo v6gen sync`.

Exit codes: 0 ok; 1 changes pending (diff); 2 usage; 3 config; 4 Docker unreachable (nothing
changed); 5 networkd reload pending (files and kernel done); 6 an uplink could not be managed;
7 writing files or kernel entries failed; 8 locked by another v6gen; 9 done, but a firewall
(Docker, ufw, firewalld, nftables) lets the LAN reach nothing but ICMPv6 of some containers
(the warning names the gatekeeper, the network and the fix); 10 done, but someone else on the
LAN answers for some container addresses, which v6gen left unclaimed (the warning names the
holder's MAC); 70 internal error.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, rich_markup_mode=None)


class _State:
    debug = False
    verbose = False


def _fail(exc: BaseException) -> NoReturn:
    if _State.debug:
        raise exc
    if isinstance(exc, V6genError):
        typer.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        raise typer.Exit(int(exc.exit_code))
    typer.echo(f"error: internal error: {type(exc).__name__}: {exc}", err=True)
    typer.echo("hint: rerun with --debug for a traceback and report it", err=True)
    raise typer.Exit(int(ExitCode.INTERNAL))


def _adapters(cfg: Config, paths: Paths) -> Adapters:
    import os

    from v6gen import detect
    from v6gen.adapters.docker import DockerAPI
    from v6gen.adapters.firewalls import HostFirewalls
    from v6gen.adapters.kernel import IpKernel
    from v6gen.adapters.ndpsock import RawNdp
    from v6gen.adapters.networkd import DBusNetworkd
    from v6gen.adapters.nftables import NftTranslator
    from v6gen.engine import Adapters
    from v6gen.paths import Paths

    # The engine's sockets are the running host's, whatever --root renders into.
    choice = detect.choose(cfg.docker_host, os.environ, Paths())
    docker = DockerAPI(choice.host, cfg.docker_timeout, choice)
    firewalls = HostFirewalls(paths.firewall_cache)
    return Adapters(
        docker, DBusNetworkd(paths), IpKernel(), firewalls, ndp=RawNdp(), translator=NftTranslator()
    )


def _context(config: Path | None, root: Path) -> Context:
    from v6gen import config as config_mod
    from v6gen.engine import Context
    from v6gen.paths import Paths

    paths = Paths(root.resolve())
    cfg = config_mod.load(config or paths.config, explicit=config is not None)
    return Context(cfg, paths, _adapters(cfg, paths), live=paths.root == Path("/"))


def _emit(outcome: Outcome, ctx: Context, as_json: bool) -> None:
    from v6gen import report

    engine = ctx.adapters.docker.choice()
    if as_json:
        doc = report.to_json(outcome, ctx.paths)
        if outcome.snapshot is not None:  # clean asks no engine
            doc["engine"] = report.engine_json(engine, outcome.snapshot.docker)
        typer.echo(json.dumps(doc, indent=2))
    else:
        for line in report.change_lines(outcome, ctx.paths):
            typer.echo(line, nl=not line.endswith("\n"))
    if _State.verbose and outcome.snapshot is not None:
        typer.echo(f"note: asked {report.engine_line(engine, outcome.snapshot.docker)}", err=True)
    for line in report.problem_lines(outcome, verbose=_State.verbose):
        typer.echo(line, err=True)


def _common(verbose: bool, debug: bool) -> None:
    _State.verbose = verbose or debug
    _State.debug = debug


CONFIG_HELP = "Config file [default: /etc/v6gen/config.yaml under --root; optional]."
ROOT_HELP = (
    "Write files under DIR instead of /. Anything but / leaves the running kernel and "
    "networkd alone (files only)."
)


def _change(
    action: str, config: Path | None, root: Path, *, dry_run: bool, as_json: bool
) -> NoReturn:
    """sync and clean: run engine.<action> (under the lock unless it is a dry run), report, exit."""
    from v6gen import engine
    from v6gen.lock import held

    func: Callable[..., Outcome] = getattr(engine, action)
    try:
        ctx = _context(config, root)
        if dry_run:
            outcome = func(ctx, dry_run=True)
        else:
            with held(ctx.paths.lock_file):
                outcome = func(ctx, dry_run=False)
    except Exception as exc:
        _fail(exc)
    _emit(outcome, ctx, as_json)
    raise typer.Exit(int(outcome.exit_code))


@app.command()
def sync(
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        "-n",
        help="Show a diff of files and the entries that would change; change nothing.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP, dir_okay=False),
    root: Path = typer.Option(Path("/"), "--root", help=ROOT_HELP, file_okay=False),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also list opted-out containers."),
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
) -> None:
    """Proxy every running container's IPv6 address on its uplink; drop what is gone.

    Asks Docker once, writes /etc/systemd/network/<file>.network.d/50-v6gen.conf per uplink,
    adds and removes kernel proxy entries at once, and reloads networkd only when a file changed.
    """
    _common(verbose, debug)
    _change("sync", config, root, dry_run=dry_run, as_json=as_json)


@app.command()
def diff(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP, dir_okay=False),
    root: Path = typer.Option(Path("/"), "--root", help=ROOT_HELP, file_okay=False),
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
) -> None:
    """Show what `sync` would change. Exit 0 when up to date, 1 when changes are pending."""
    _common(False, debug)
    from v6gen import engine

    try:
        ctx = _context(config, root)
        outcome = engine.sync(ctx, dry_run=True)
    except Exception as exc:
        _fail(exc)
    _emit(outcome, ctx, as_json)
    code = outcome.exit_code
    if code in (ExitCode.FIREWALL, ExitCode.HELD):
        code = ExitCode.OK  # diff answers "anything to do?"; the warning says the rest
    raise typer.Exit(
        int(code if code != ExitCode.OK or outcome.changes.empty else ExitCode.CHANGES_PENDING)
    )


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP, dir_okay=False),
    root: Path = typer.Option(Path("/"), "--root", help=ROOT_HELP, file_okay=False),
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
) -> None:
    """Per address: uplink, drop-in, kernel, what the LAN reaches, container.

    LAN is what the firewalls on the forward path (Docker, ufw, firewalld, nftables) let a LAN
    host reach once the address is proxied: all ports, published (published ports, and ICMPv6
    in gateway mode routed), ports:80,443 (those published ports only), icmp (ICMPv6 echo only),
    none, or unknown. Exit 1 when anything is out of step or reaches nothing but ICMPv6.
    """
    _common(False, debug)
    from v6gen import engine

    try:
        ctx = _context(config, root)
        rows, plan = engine.status(ctx)
    except Exception as exc:
        _fail(exc)
    from v6gen.prefixes import subnet_lines
    from v6gen.report import blocked_lines, engine_line, gated_lines
    from v6gen.translate import lines

    # stderr: stdout stays the table (or the JSON list) scripts read.
    typer.echo(f"engine: {engine_line(ctx.adapters.docker.choice())}", err=True)
    if as_json:
        typer.echo(json.dumps([{**r.__dict__, "ok": r.ok} for r in rows], indent=2))
    else:
        head = f"{'ADDRESS':<28} {'UPLINK':<10} {'DROP-IN':<7} {'KERNEL':<6} {'LAN':<9}"
        typer.echo(f"{head}  CONTAINER")
        for r in rows:
            who = ", ".join(r.containers) or "(stale: no container)"
            flags = f"{_yn(r.in_dropin):<7} {_yn(r.in_kernel):<6} {r.lan_reach:<9}"
            typer.echo(f"{r.address:<28} {r.uplink:<10} {flags}  {who}")
        if not rows:
            typer.echo("no container addresses to proxy")
    for line in blocked_lines(plan) + gated_lines(plan) + subnet_lines(plan) + lines(plan):
        typer.echo(line, err=True)
    raise typer.Exit(0 if all(r.ok for r in rows) and not plan.failed else 1)


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"


@app.command()
def clean(
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show what would go."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP, dir_okay=False),
    root: Path = typer.Option(Path("/"), "--root", help=ROOT_HELP, file_okay=False),
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
) -> None:
    """Remove every file and kernel proxy entry v6gen made, then reload networkd.

    Files and entries that v6gen did not make are never touched.
    """
    _common(False, debug)
    _change("clean", config, root, dry_run=dry_run, as_json=as_json)


@app.command()
def doctor(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable report on stdout."),
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP, dir_okay=False),
    root: Path = typer.Option(Path("/"), "--root", help=ROOT_HELP, file_okay=False),
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
) -> None:
    """Check every precondition of working NDP proxying: one line each, ok / warn / fail.

    Docker, its IPv6 networks and what its firewall lets the LAN reach, the uplink and its
    .network file, IPv6 forwarding (host and uplink), proxy_ndp, router advertisements, bug
    #18378, the dispatcher hooks and their modes, proxy_delay, and kernel entries against the
    plan. Exit 1 when any check fails.
    """
    _common(False, debug)
    from v6gen import doctor as doctor_mod

    try:
        ctx = _context(config, root)
        checks = doctor_mod.run(ctx)
    except Exception as exc:
        _fail(exc)
    if as_json:
        rows = [{**c.__dict__, "level": c.level.value} for c in checks]
        typer.echo(json.dumps(rows, indent=2))
    else:
        for c in checks:
            typer.echo(f"{c.level.value:<4}  {c.name}: {c.message}")
            if c.hint and c.level is not doctor_mod.Level.OK:
                typer.echo(f"      hint: {c.hint}")
    raise typer.Exit(doctor_mod.exit_code(checks))


@app.command()
def watch(
    config: Path = typer.Option(None, "--config", "-c", help=CONFIG_HELP, dir_okay=False),
    debounce: float = typer.Option(
        0.1,
        "--debounce",
        min=0.0,
        max=5.0,
        help="Seconds of quiet that end a burst of Docker events.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also list opted-out containers."),
    debug: bool = typer.Option(False, "--debug", help="Tracebacks on errors."),
) -> None:
    """Follow Docker events: proxy a container the moment it starts, drop it when it stops.

    Resyncs fully at start, on SIGHUP (which also rereads the config) and after Docker comes
    back; while Docker is away, files and kernel entries stay as they are. Shares the lock with
    `sync`. Runs as v6gen.service (Type=notify).
    """
    _common(verbose, debug)
    from v6gen.watch import Timing, serve

    def log(line: str) -> None:
        typer.echo(f"v6gen: {line}", err=True)

    gated: frozenset[tuple[str, str]] = frozenset()

    def report(outcome: Outcome, ctx: Context) -> None:
        from v6gen.report import change_lines, gated_keys, lifted_lines, problem_lines

        nonlocal gated
        if not outcome.changes.empty:
            for line in change_lines(outcome, ctx.paths):
                log(line)
        for line in lifted_lines(gated, outcome.plan):
            log(line)
        gated = gated_keys(outcome.plan)
        for line in problem_lines(outcome, verbose=_State.verbose):
            typer.echo(line, err=True)

    try:
        serve(config, Timing(debounce=debounce), log, report)
    except Exception as exc:
        _fail(exc)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"v6gen {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
