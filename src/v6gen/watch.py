"""`v6gen watch`: follow Docker events and run the same sync as `v6gen sync`.

Bursts are coalesced twice. Kernel entries follow within a short debounce: a sync at most
`max_delay` after the first event of a burst, so a new container is reachable at once. The
networkd reload those syncs owe (their drop-ins are written at once) waits until the events
have been quiet for `settle` seconds (never longer than `reload_max`): a `compose up` of 50
services takes several seconds of events, and would otherwise reload networkd after every
sync (measured in the lab: 5-7 reloads for 50 containers). When dockerd goes away the files
and kernel entries stay as they are; the watcher reconnects with backoff and resyncs. SIGHUP
rereads the configuration and forces a resync (from a Docker the new configuration names, if it
names another); SIGTERM and SIGINT end it cleanly, after any owed reload.

Before any debounce, every event (with whatever else has already arrived behind it) goes to
`react`, the fast path (v6gen.instant): the kernel entries of a container Docker is connecting
are in place before it runs.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from v6gen.errors import DockerError, V6genError
from v6gen.notify import Notifier


class EventStream(Protocol):
    def __iter__(self) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Timing:
    debounce: float = 0.1  # quiet time that ends a burst
    max_delay: float = 1.0  # a burst never delays the sync longer than this
    settle: float = 1.0  # quiet time after an event sync before the networkd reload it owes
    reload_max: float = 10.0  # an owed reload never waits longer than this
    backoff_min: float = 0.5
    backoff_max: float = 5.0  # a local socket: retrying is cheap, noticing Docker late is not


_LOST, _EVENT, _HUP, _STOP = "lost", "event", "hup", "stop"


def _new_network(event: Any) -> bool:
    """A network Docker has just made: the fast path asks for it, and nothing else changes
    until a container joins it. So no sync, whose lock would hold up that container's claim
    at its `create`, the fast path's ~0.2 s lead on 28.5."""
    kind = (event.get("Type"), event.get("Action")) if isinstance(event, dict) else None
    return kind == ("network", "create")


# The host's firewall rules changed (adapters/rulemonitor.py): judged again by a sync, with no
# Docker event to trigger one.
_RULES = "rules"
# An uplink's prefixes changed (adapters/addrmonitor.py): planned again by a sync, which says
# whose reach went or came back (v6gen.prefixes).
_ADDRS = "addresses"


class Watcher:
    """`resync(reason)` runs one sync; it returns True when it wrote networkd files and left the
    reload to `reload()`, which the watcher calls once the burst has settled: right after the
    sync for reasons other than "events", before reconnecting, and before it stops.
    `reconfigure()` rereads the configuration on SIGHUP, also while Docker is away; it returns
    True when Docker is now to be asked elsewhere, and the event stream is then opened anew
    (through `subscribe`, which must follow the new settings) before the resync.
    `react(events, more)` is given every event at once, in batches of what had arrived by then,
    and may call `more()` for what has arrived since; what it raises is logged, and the sync
    that follows the burst does the work."""

    def __init__(
        self,
        subscribe: Callable[[], EventStream],
        resync: Callable[[str], bool | None],
        log: Callable[[str], None],
        notifier: Notifier | None = None,
        timing: Timing = Timing(),
        reload: Callable[[], None] | None = None,
        reconfigure: Callable[[], bool] | None = None,
        react: Callable[[list[Any], Callable[[], list[Any]]], None] | None = None,
    ) -> None:
        self._subscribe = subscribe
        self._resync = resync
        self._log = log
        self._notifier = notifier or Notifier("")
        self._timing = timing
        self._reload = reload
        self._reconfigure = reconfigure
        self._react = react
        self._held: tuple[str, Any] | None = None  # a message the fast path's batch ran into
        self._owed_since: float | None = None  # monotonic time of the first unreloaded sync
        self._reload_at: float | None = None  # when the owed reload is due
        # (kind, payload, generation): the generation tells the current stream's messages from
        # leftovers of a stream that was already given up.
        self._queue: queue.Queue[tuple[str, Any, int]] = queue.Queue()
        self._generation = 0
        self._stopping = threading.Event()
        self._following = False  # STATUS says "following Docker events"
        self.syncs = 0

    # Thread-safe entry points (signal handlers, tests).
    def stop(self) -> None:
        self._stopping.set()
        self._queue.put((_STOP, None, -1))

    def hup(self) -> None:
        self._queue.put((_HUP, None, -1))

    def rules_changed(self) -> None:
        self._queue.put((_RULES, None, -1))

    def addresses_changed(self) -> None:
        self._queue.put((_ADDRS, None, -1))

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self.hup())

    def run(self) -> None:
        delay = self._timing.backoff_min
        reason = "start"
        while not self._stopping.is_set():
            try:
                stream = self._subscribe()
            except DockerError as exc:
                self._log(f"docker unreachable ({exc.message}); entries kept, retry in {delay:g} s")
                # Ready all the same: watch is up and will act the moment Docker is, and a unit
                # that never became ready would hold up boot and be restarted in a loop.
                self._following = False
                self._notifier.send(ready="1", status=f"waiting for Docker: {exc.message}")
                self._sleep(delay)
                delay = min(delay * 2, self._timing.backoff_max)
                reason = "reconnect"
                continue
            self._generation += 1
            reader = threading.Thread(
                target=self._read, args=(stream, self._generation), daemon=True
            )
            reader.start()
            synced = False
            try:
                # Subscribed first, synced second: nothing that starts in between is missed.
                synced = self._sync(reason)
                if synced:
                    delay = self._timing.backoff_min
                    self._follow()
            finally:
                stream.close()
                reader.join(timeout=2)
            self._flush()  # networkd needs no Docker: don't keep it waiting for a reconnect
            if not synced:
                # Subscribing works but listing fails (a 500, a malformed answer): back off too,
                # or this loop would hammer dockerd thousands of times a second.
                self._sleep(delay)
                delay = min(delay * 2, self._timing.backoff_max)
            reason = "reconnect"
        self._notifier.send(stopping="1", status="stopping")

    def _read(self, stream: Iterable[Any], generation: int) -> None:
        try:
            for event in stream:
                self._queue.put((_EVENT, event, generation))
            self._queue.put((_LOST, "event stream ended", generation))
        except DockerError as exc:
            self._queue.put((_LOST, exc.message, generation))

    def _get(self, timeout: float | None) -> tuple[str, Any]:
        """The next message for the current stream; raises queue.Empty on timeout."""
        if self._held is not None:
            held, self._held = self._held, None
            return held
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            kind, payload, generation = self._queue.get(timeout=left)
            if generation in (-1, self._generation):
                return kind, payload

    def _sync(self, reason: str) -> bool:
        """False when Docker turned out to be unreachable (so: reconnect)."""
        try:
            owes = self._resync(reason)
        except DockerError as exc:
            self._log(f"sync failed, docker unreachable: {exc.message}; entries kept")
            return False
        except V6genError as exc:
            self._log(f"sync failed: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""))
            owes = False
        self.syncs += 1
        if owes and self._reload is not None:
            now = time.monotonic()
            if self._owed_since is None:
                self._owed_since = now
            self._reload_at = min(
                now + self._timing.settle, self._owed_since + self._timing.reload_max
            )
        # Rule changes come in bursts like events (Docker rewrites its own rules as containers
        # start): their reload waits for the quiet too.
        if reason not in ("events", "rules") or (
            self._reload_at is not None and time.monotonic() >= self._reload_at
        ):
            self._flush()
        if not self._following:
            self._following = True
            self._notifier.send(ready="1", status="following Docker events")
        return True

    def _flush(self) -> None:
        """The networkd reload owed since an earlier sync, if any. A failed one is logged and
        tried again `reload_max` later (the files are in place meanwhile)."""
        if self._owed_since is None or self._reload is None:
            return
        try:
            self._reload()
        except V6genError as exc:
            self._log(
                f"warning: networkd was not reloaded: {exc.message}"
                + (f" (hint: {exc.hint})" if exc.hint else "")
            )
            self._owed_since = time.monotonic()
            self._reload_at = self._owed_since + self._timing.reload_max
            return
        self._owed_since = self._reload_at = None

    def _timeout(self, interval: float | None) -> float | None:
        """How long to wait for the next message: until the watchdog ping or the owed reload."""
        if self._reload_at is None:
            return interval
        left = max(0.0, self._reload_at - time.monotonic())
        return left if interval is None else min(interval, left)

    def _follow(self) -> None:
        interval = self._notifier.watchdog_interval
        while not self._stopping.is_set():
            try:
                kind, payload = self._get(self._timeout(interval))
            except queue.Empty:
                if self._reload_at is not None and time.monotonic() >= self._reload_at:
                    self._flush()
                if interval is not None:
                    self._notifier.send(watchdog="1")
                continue
            if kind == _STOP:
                return
            if kind == _LOST:
                self._log(f"lost Docker ({payload}); entries kept, reconnecting")
                return
            if kind == _EVENT and _new_network(payload):
                self._fast(payload, alone=True)
                continue
            reason = "hup" if kind == _HUP else "events"
            if kind in (_EVENT, _RULES, _ADDRS):
                if kind == _EVENT:
                    self._fast(payload)
                # A `ufw reload` is hundreds of rule changes: one sync after the burst.
                seen = {kind}
                kind, payload, more = self._coalesce()
                seen |= more
                reason = "events" if _EVENT in seen else "addresses" if _ADDRS in seen else "rules"
                if kind in (_STOP, _LOST):
                    self._queue.put((kind, payload, -1))  # handle it after this sync
                if kind == _HUP:
                    reason = "hup"
            if kind == _HUP and self._hup():
                return  # the run loop subscribes to the new Docker and resyncs from it
            if not self._sync(reason):
                return
            if interval is not None:
                self._notifier.send(watchdog="1")

    def _hup(self) -> bool:
        """Reread the configuration; True when the event stream must be opened anew."""
        if self._reconfigure is None:
            return False
        try:
            return self._reconfigure()
        except V6genError as exc:
            self._log(f"config not reloaded, keeping the previous one: {exc.message}")
            return False

    def _coalesce(self) -> tuple[str, Any, set[str]]:
        """Swallow the rest of a burst (Docker events, rule and address changes); return
        anything that ended it early (kind, payload), and the kinds the burst held."""
        deadline = time.monotonic() + self._timing.max_delay
        seen: set[str] = set()
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, payload = self._get(min(self._timing.debounce, left))
            except queue.Empty:
                break
            if kind not in (_EVENT, _RULES, _ADDRS):
                return kind, payload, seen
            seen.add(kind)
            if kind == _EVENT:
                self._fast(payload)
        return _EVENT, None, seen

    def _fast(self, event: Any, alone: bool = False) -> None:
        """The fast path for `event` and every event already queued behind it (so a container
        that died meanwhile is judged by its death); it may ask for more (`_drain`) once it
        holds the lock, which another run may have held meanwhile. `alone`: only `event`, whose
        followers are left to the loop (they owe a sync that it does not)."""
        if self._react is None:
            return
        try:
            if alone:
                self._react([event], list)
            else:
                self._react([event, *self._drain()], self._drain)
        except V6genError as exc:
            self._log(
                f"fast path failed, the sync does it: {exc.message}"
                + (f" (hint: {exc.hint})" if exc.hint else "")
            )

    def _drain(self) -> list[Any]:
        """The events queued right now; a message other than an event ends them and is handled
        next, as it would have been."""
        found = []
        while self._held is None:
            try:
                kind, payload = self._get(0)
            except queue.Empty:
                break
            if kind == _EVENT:
                found.append(payload)
            else:
                self._held = (kind, payload)
        return found

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once for stop (and give up the wait on SIGHUP). The watchdog is
        fed meanwhile: waiting for Docker is no hang, and a long outage would otherwise
        outlast WatchdogSec."""
        interval = self._notifier.watchdog_interval
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, payload = self._get(left if interval is None else min(left, interval))
            except queue.Empty:
                if interval is not None:
                    self._notifier.send(watchdog="1")
                continue
            if kind == _STOP:
                self._queue.put((kind, payload, -1))
                return
            if kind == _HUP:
                self._hup()  # try again at once, with whatever the configuration says now
                return
            # Events or the end of the stream just given up: no reason to retry early.


def serve(
    config_path: Any, timing: Timing, log: Callable[[str], None], report: Callable[[Any, Any], None]
) -> None:
    """Wire the real adapters to a Watcher and run it until SIGTERM/SIGINT."""
    import os
    from pathlib import Path

    from v6gen import apply, detect, engine, lock, state
    from v6gen import config as config_mod
    from v6gen.adapters.addrmonitor import AddressMonitor
    from v6gen.adapters.docker import DockerAPI
    from v6gen.adapters.firewalls import HostFirewalls
    from v6gen.adapters.kernel import IpKernel
    from v6gen.adapters.ndpsock import RawNdp
    from v6gen.adapters.networkd import DBusNetworkd
    from v6gen.adapters.nftables import NftTranslator
    from v6gen.adapters.rulemonitor import LegacyPoller, RuleMonitor
    from v6gen.instant import Instant
    from v6gen.model import Endpoint
    from v6gen.paths import Paths
    from v6gen.prefixes import reach_changes
    from v6gen.report import change_lines

    paths = Paths(Path("/"))
    source = config_path or paths.config
    current = config_mod.load(source, explicit=config_path is not None)

    def follow() -> tuple[DockerAPI, tuple[str, float]]:
        # Chosen once, and again on SIGHUP only: a Docker socket that goes away while dockerd
        # restarts must not turn watch to Podman (detect.py).
        choice = detect.choose(current.docker_host, os.environ, paths)
        api = DockerAPI(choice.host, current.docker_timeout, choice)
        return api, (choice.where, current.docker_timeout)

    docker, endpoint = follow()
    retired: list[DockerAPI] = []  # replaced clients, closed once their event stream is
    kernel = IpKernel()
    # One for the process: it keeps the announcements' rate over every sync, and repeats each
    # while the address is still v6gen's.
    ndp = RawNdp(still_ours=lambda uplink, address: (uplink, address) in state.owned(paths))
    # Replays are remembered in memory across resyncs: a ruleset is judged once. A change of
    # rules alone (`ufw reload`) comes from the rule monitor below, and asks for a sync.
    firewalls = HostFirewalls()
    translator = NftTranslator()
    # The last sync's plan and host facts: what a prefix change is told against.
    planned: tuple[Any, Any] | None = None

    def reconfigure() -> bool:
        nonlocal current, docker, endpoint
        log("SIGHUP: rereading the config")
        current = config_mod.load(source, explicit=config_path is not None)
        new, chosen = follow()
        if chosen == endpoint:
            new.close()
            return False
        endpoint = chosen
        retired.append(docker)
        docker = new
        log(f"following {docker.choice().describe()} from now on")
        return True

    def subscribe() -> EventStream:
        # Called once the previous stream is closed: the clients it came from can go now.
        while retired:
            retired.pop().close()
        return docker.events()

    def resync(reason: str) -> bool:
        if reason == "hup":
            log("SIGHUP: full resync")
        if reason == "rules":
            log("the host's firewall rules changed: judging the path again")
        nonlocal planned
        if reason in ("start", "reconnect"):
            instant.forget()
        # A fresh bus connection per sync: networkd or dbus may have restarted meanwhile. The
        # reload is left to the Watcher (the marker keeps it owed even if watch is killed).
        with DBusNetworkd(paths) as networkd:
            adapters = engine.Adapters(
                docker, networkd, kernel, firewalls, ndp=ndp, translator=translator
            )
            ctx = engine.Context(current, paths, adapters, live=True, defer_reload=True)
            try:
                with lock.held(paths.lock_file):
                    outcome = engine.sync(
                        ctx,
                        starting=instant.starting(),
                        stopped=instant.stopped(),
                        left=instant.left(),
                    )
            except V6genError:
                instant.synced(None)
                raise
        instant.synced(outcome.snapshot)
        report(outcome, ctx)
        if outcome.snapshot is not None:
            now = (outcome.plan, outcome.snapshot.host)
            for line in reach_changes(planned, now) if planned is not None else ():
                log(line)
            # A plan whose uplink failed (no address at all for a moment, as while networkd
            # swaps a static one) leaves that uplink out: the next is told against the last
            # whole one.
            if not outcome.plan.failed or planned is None:
                planned = now
        return outcome.result is not None and outcome.result.reload_deferred

    def update(snapshot: engine.Snapshot, cid: str, found: list[Endpoint]) -> engine.Snapshot:
        # Called with the lock held (Instant's `hold`). networkd is never asked: the fast path
        # writes no networkd file and never reloads.
        adapters = engine.Adapters(docker, DBusNetworkd(paths), kernel, ndp=ndp)
        ctx = engine.Context(current, paths, adapters, live=True, defer_reload=True)
        outcome, updated = engine.update_container(ctx, snapshot, cid, found)
        if not outcome.changes.empty:
            for line in change_lines(outcome, paths):
                log(f"{line} (fast path)")
        for line in outcome.warnings:
            log(line)
        return updated

    class Source:
        """Whichever Docker the configuration names now (SIGHUP may change it)."""

        def starting_endpoints(
            self, container_id: str, network: tuple[str, str] | None = None
        ) -> list[Endpoint]:
            return docker.starting_endpoints(container_id, network)

    instant = Instant(
        Source(), update, hold=lambda: lock.held(paths.lock_file), networks=lambda: docker.facts()
    )

    def reload() -> None:
        with DBusNetworkd(paths) as networkd:
            detours = apply.reload(paths, networkd)
        log("reloaded systemd-networkd")
        for detour in detours:
            log(f"warning: {detour}")

    watcher = Watcher(
        subscribe, resync, log, Notifier(), timing, reload, reconfigure, react=instant.react
    )
    watcher.install_signal_handlers()
    monitor = RuleMonitor(watcher.rules_changed, log)
    legacy = LegacyPoller(watcher.rules_changed, firewalls.legacy)

    def addresses(interface: str, what: str) -> None:
        # Every uplink the last sync asked about (configured ones and the default route's);
        # "" when notifications were lost. Docker's bridges change addresses too: not ours.
        uplinks = planned[1].links if planned is not None else ()
        if interface and interface not in uplinks:
            return
        if interface:
            log(f"{interface}: {what}")
        watcher.addresses_changed()

    addrs = AddressMonitor(addresses, log)
    log(f"watching the events of {docker.choice().describe()}")
    if monitor.start():
        log("following the host's firewall rules (nft monitor)")
    legacy.start()
    if addrs.start():
        log("following the uplinks' IPv6 prefixes (rtnetlink)")
    try:
        watcher.run()
    finally:
        monitor.close()
        legacy.close()
        addrs.close()
    log("stopped")
