"""systemd-networkd over the D-Bus system bus (dbus-next), with the fallbacks that networkd
without DescribeLink (247), a broken bus or a host without systemd as PID 1 need."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import subprocess
from collections.abc import Coroutine, Sequence
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from v6gen.errors import NetworkdError
from v6gen.model import NetworkdLink
from v6gen.paths import Paths

if TYPE_CHECKING:
    from dbus_next.aio.message_bus import MessageBus

log = logging.getLogger(__name__)

_T = TypeVar("_T")

NETWORK1 = "org.freedesktop.network1"
NETWORK1_PATH = "/org/freedesktop/network1"
NETWORK1_MANAGER = "org.freedesktop.network1.Manager"
SYSTEMD1 = "org.freedesktop.systemd1"
SYSTEMD1_PATH = "/org/freedesktop/systemd1"
SYSTEMD1_MANAGER = "org.freedesktop.systemd1.Manager"
PROPERTIES = "org.freedesktop.DBus.Properties"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
# systemd shares one constant between resolved and networkd, so networkd 247 and 252 both answer
# an unknown link with "org.freedesktop.resolve1.NoSuchLink" (measured); matching the suffix also
# accepts a future rename to network1.
_NO_SUCH_LINK_SUFFIX = ".NoSuchLink"
_DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
_UNKNOWN_STATE = "unknown"
BUS = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
# Every systemd binary maps its release's libsystemd-shared-<major>.so: the running daemon's own
# version, whatever was installed since (an upgrade without a restart) or wherever it came from.
_SHARED_LIB = re.compile(r"/libsystemd-shared-(\d+)\.so$", re.MULTILINE)


class _CallFailed(NetworkdError):
    """An error reply; `name` lets callers tell an expected answer from a real failure."""

    def __init__(self, name: str, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.name = name


class DBusNetworkd:
    """The Networkd port: one lazily opened system-bus connection, blocking calls.

    Every bus round trip (and the connect) is bounded by `timeout` seconds, and so is each
    `networkctl` fallback, so a hung bus or daemon costs v6gen seconds, never a hang; a failed
    connect is remembered until close(), so it costs that only once. Not thread-safe, and not
    for use from inside a running asyncio loop: it runs its own.
    """

    def __init__(
        self, paths: Paths, *, timeout: float = 5.0, networkctl: str = "networkctl"
    ) -> None:
        self._paths = paths
        self._timeout = timeout
        self._networkctl_cmd = networkctl
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bus: MessageBus | None = None
        # A bus that failed to connect once fails the same way until close(); retrying would
        # cost a full timeout per call when the bus hangs.
        self._connect_failure: NetworkdError | None = None
        self._has_describe_link = True
        self._version: int | None = None
        self._version_known = False
        self._version_source = "not asked yet"
        self._version_running = False

    # -- the Networkd port ------------------------------------------------------------------

    def link(self, name: str) -> NetworkdLink | None:
        """None when networkd does not know the link. admin_state is "unknown" when networkd
        knows the link but has no state file for it yet (only where DescribeLink is missing)."""
        try:
            (ifindex, _path) = self._call(
                NETWORK1, NETWORK1_PATH, NETWORK1_MANAGER, "GetLinkByName", "s", [name], "io"
            )
        except _CallFailed as e:
            if e.name.endswith(_NO_SUCH_LINK_SUFFIX):
                return None
            raise
        ifindex = int(ifindex)
        if self._has_describe_link:
            try:
                (text,) = self._call(
                    NETWORK1, NETWORK1_PATH, NETWORK1_MANAGER, "DescribeLink", "i", [ifindex], "s"
                )
            except _CallFailed as e:
                if e.name.endswith(_NO_SUCH_LINK_SUFFIX):  # gone since GetLinkByName
                    return None
                if e.name != UNKNOWN_METHOD:
                    raise
                # networkd's JSON descriptions came around v249 (systemd PR #19592); Debian
                # 11's 247 answers UnknownMethod (measured).
                self._has_describe_link = False
                log.debug("systemd-networkd has no DescribeLink: reading its link state files")
            else:
                return _link_from_description(name, ifindex, str(text))
        return self._link_from_state_file(name, ifindex)

    def network_file_links(self) -> dict[PurePosixPath, frozenset[str]]:
        """Manager.Describe (one call for every link); where networkd lacks it (247), ListLinks
        and each link's state file."""
        found: dict[PurePosixPath, set[str]] = {}
        if self._has_describe_link:
            try:
                (text,) = self._call(
                    NETWORK1, NETWORK1_PATH, NETWORK1_MANAGER, "Describe", "", [], "s"
                )
            except _CallFailed as e:
                if e.name != UNKNOWN_METHOD:
                    raise
                self._has_describe_link = False  # Describe and DescribeLink came together
            else:
                for name, network_file in _interfaces_from_description(str(text)):
                    found.setdefault(network_file, set()).add(name)
                return {f: frozenset(names) for f, names in found.items()}
        (links,) = self._call(
            NETWORK1, NETWORK1_PATH, NETWORK1_MANAGER, "ListLinks", "", [], "a(iso)"
        )
        for ifindex, name, _path in links:
            link = self._link_from_state_file(str(name), int(ifindex))
            if link.network_file is not None:
                found.setdefault(link.network_file, set()).add(link.name)
        return {f: frozenset(names) for f, names in found.items()}

    def reload(self) -> str | None:
        """Manager.Reload, else `networkctl reload` (returning a warning that says so);
        NetworkdError when neither worked.

        Not 262's `--no-reconfigure` (varlink Reload with reconfigureLinks=false): a Reload
        reconfigures only the links whose files changed, here the uplink, and networkd must
        reconfigure it to take the new address list as its own (it re-adds only what it has
        configured, after a flap or its restart). Measured on 262 in the lab: five reloads cost
        a 10 ms echo stream to an already proxied container nothing (0 of 580-714 lost), and
        a second uplink was not reconfigured (tests/lab/test_networkd262.py)."""
        try:
            self._call(NETWORK1, NETWORK1_PATH, NETWORK1_MANAGER, "Reload", "", [], "")
            return None
        except NetworkdError as e:
            over_dbus = e
        try:
            self._networkctl("reload")
        except NetworkdError as e:
            raise NetworkdError(
                f"could not make systemd-networkd reload: {over_dbus.message}; {e.message}",
                "the files are in place and take effect at the next `networkctl reload`; "
                + over_dbus.hint,
            ) from None
        return (
            f"reloaded systemd-networkd with `networkctl reload`: D-Bus failed: {over_dbus.message}"
        )

    def systemd_version(self) -> int | None:
        """The running networkd's major version, else the running systemd's, else the installed
        networkctl's, else None."""
        if not self._version_known:
            self._version = self._query_version()
            self._version_known = True
        return self._version

    def systemd_version_source(self) -> str:
        """Where systemd_version() came from, for doctor."""
        self.systemd_version()
        return self._version_source

    def systemd_version_running(self) -> bool:
        self.systemd_version()
        return self._version_running

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the connection, the private loop and a remembered connect failure; a later
        call starts afresh."""
        self._drop()
        self._connect_failure = None

    def _drop(self) -> None:
        bus, self._bus = self._bus, None
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.close()
        if bus is not None:
            _close_sockets(bus)

    def __enter__(self) -> DBusNetworkd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _hint(self) -> str:
        return (
            "is systemd-networkd running (`systemctl status systemd-networkd`)? "
            f"is the system bus at {_bus_address()} reachable (DBUS_SYSTEM_BUS_ADDRESS "
            "overrides it)?"
        )

    def _run(self, coro: Coroutine[Any, Any, _T], what: str) -> _T:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop.set_exception_handler(_log_loop_exception)
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coro, self._timeout))
        except TimeoutError:
            raise NetworkdError(
                f"timed out after {self._timeout:g} s {what}", self._hint()
            ) from None
        except NetworkdError:
            raise
        except Exception as e:
            # dbus-next reports transport trouble as bare OSError, EOFError, ValueError or
            # AuthError; none of them may reach the CLI as a traceback.
            detail = str(e) or type(e).__name__
            raise NetworkdError(f"failed {what}: {detail}", self._hint()) from e

    def _connection(self) -> MessageBus:
        if self._bus is not None and self._bus.connected:
            return self._bus
        if self._connect_failure is not None:
            raise NetworkdError(self._connect_failure.message, self._connect_failure.hint)
        # A bus that dropped us mid-run: start over with a fresh loop and socket.
        self._drop()
        try:
            self._bus = self._run(
                _connect(), f"connecting to the D-Bus system bus at {_bus_address()}"
            )
        except NetworkdError as e:
            self._connect_failure = e
            self._drop()
            raise
        return self._bus

    def _call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str,
        body: Sequence[Any],
        reply_signature: str,
        *,
        auto_start: bool = True,
    ) -> list[Any]:
        from dbus_next.constants import MessageFlag, MessageType
        from dbus_next.message import Message

        bus = self._connection()
        msg = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
            flags=MessageFlag.NONE if auto_start else MessageFlag.NO_AUTOSTART,
        )
        reply = self._run(bus.call(msg), f"calling {member} of {destination}")
        if reply is None:  # only for NO_REPLY_EXPECTED calls, which v6gen never makes
            raise NetworkdError(f"{destination} sent no reply to {member}", self._hint())
        if reply.message_type == MessageType.ERROR:
            name = str(reply.error_name)
            text = str(reply.body[0]) if reply.body else ""
            hint = self._hint()
            if name.endswith((".AccessDenied", ".InteractiveAuthorizationRequired")):
                hint = "run v6gen as root: polkit lets only root change systemd-networkd"
            raise _CallFailed(name, f"{destination} refused {member}: {text} ({name})", hint)
        if reply.signature != reply_signature:
            raise NetworkdError(
                f"{destination} answered {member} with signature {reply.signature!r}, "
                f"expected {reply_signature!r}",
                "is something other than systemd answering on the system bus?",
            )
        return list(reply.body)

    def _networkctl(self, *args: str) -> str:
        cmd = [self._networkctl_cmd, *args]
        shown = " ".join(cmd)
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=self._timeout, check=False
            )
        except FileNotFoundError:
            raise NetworkdError(f"{self._networkctl_cmd} not found", self._hint()) from None
        except subprocess.TimeoutExpired:
            raise NetworkdError(
                f"`{shown}` did not finish within {self._timeout:g} s", self._hint()
            ) from None
        except OSError as e:
            raise NetworkdError(f"cannot run `{shown}`: {e.strerror}", self._hint()) from None
        if done.returncode != 0:
            detail = done.stderr.strip() or f"exit status {done.returncode}"
            raise NetworkdError(f"`{shown}` failed: {detail}", self._hint())
        return done.stdout

    def _running_networkd_version(self) -> tuple[int, int] | None:
        """(major version, pid) of the systemd-networkd that owns its bus name."""
        try:
            (pid,) = self._call(
                BUS, BUS_PATH, BUS, "GetConnectionUnixProcessID", "s", [NETWORK1], "u"
            )
            maps = Path(f"/proc/{int(pid)}/maps").read_text(encoding="utf-8", errors="replace")
        except (NetworkdError, OSError, ValueError) as e:
            log.debug("running networkd's version: %s", e)
            return None
        match = _SHARED_LIB.search(maps)
        return (int(match.group(1)), int(pid)) if match else None

    def _query_version(self) -> int | None:
        running = self._running_networkd_version()
        if running is not None:
            self._version_source = f"the running systemd-networkd (pid {running[1]})"
            self._version_running = True
            return running[0]
        try:
            (value,) = self._call(
                SYSTEMD1,
                SYSTEMD1_PATH,
                PROPERTIES,
                "Get",
                "ss",
                [SYSTEMD1_MANAGER, "Version"],
                "v",
                # Where systemd is not PID 1 (containers, the lab) the bus would try to activate
                # it and log a failure on every run; the networkctl fallback answers instead.
                auto_start=False,
            )
            version = _leading_int(str(getattr(value, "value", value)))
            if version is not None:
                self._version_source = "the running systemd (PID 1), not networkd itself"
                # Debian's and upstream's packaging restart networkd right after re-executing
                # PID 1 on an upgrade: the two run the same release.
                self._version_running = True
                return version
        except NetworkdError as e:
            # Normal where systemd is not PID 1 (containers): networkctl still knows.
            log.debug("systemd version over D-Bus: %s", e.message)
        try:
            first = (self._networkctl("--version").splitlines() or [""])[0]
        except NetworkdError as e:
            log.debug("systemd version from networkctl: %s", e.message)
            self._version_source = "nothing: networkd, systemd and networkctl could not be asked"
            return None
        # "systemd 252 (252.38-1~deb12u1)": the installed client, usually the running daemon.
        match = re.match(r"systemd (\d+)", first.strip())
        self._version_source = "the installed networkctl, not the running networkd"
        return int(match.group(1)) if match else None

    def _link_from_state_file(self, name: str, ifindex: int) -> NetworkdLink:
        # The file says "private data, do not parse", but without DescribeLink it is the only place
        # networkd tells which .network file a link uses.
        path = self._paths.netif_links / str(ifindex)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return NetworkdLink(
                name=name, index=ifindex, admin_state=_UNKNOWN_STATE, network_file=None
            )
        except OSError as e:
            raise NetworkdError(f"cannot read {path}: {e.strerror}", "v6gen needs root") from None
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                values[key.strip()] = value.strip()
        network_file = values.get("NETWORK_FILE")
        return NetworkdLink(
            name=name,
            index=ifindex,
            admin_state=values.get("ADMIN_STATE") or _UNKNOWN_STATE,
            network_file=PurePosixPath(network_file) if network_file else None,
        )


async def _connect() -> MessageBus:
    # Imported here so that `v6gen --help` and every command that never talks to networkd stay
    # free of dbus-next's import cost.
    from dbus_next.aio.message_bus import MessageBus
    from dbus_next.constants import BusType

    # Built inside the running private loop: dbus-next 0.2.3 binds to get_event_loop() here.
    try:
        bus = MessageBus(bus_type=BusType.SYSTEM)
    except BaseException as e:
        # The constructor opens the socket and leaves it open when connecting fails; the
        # half-built bus is only reachable through the traceback.
        tb = e.__traceback__
        while tb is not None:
            half_built = tb.tb_frame.f_locals.get("self")
            if isinstance(half_built, MessageBus):
                _close_sockets(half_built)
                break
            tb = tb.tb_next
        raise
    try:
        await bus.connect()
    except BaseException:
        _close_sockets(bus)
        raise
    return bus


def _close_sockets(bus: Any) -> None:
    # dbus-next 0.2.3 only shuts its socket down and never closes it (nor the file object it
    # reads through), leaking two descriptors per connection.
    for attr in ("_stream", "_sock"):
        with contextlib.suppress(Exception):
            getattr(bus, attr).close()


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # dbus-next leaves futures failing in the background when the bus goes away; in the
    # private loop they are noise for --debug, not errors for the user.
    log.debug("dbus-next: %s", context.get("message"), exc_info=context.get("exception"))


def _link_from_description(name: str, ifindex: int, text: str) -> NetworkdLink:
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise NetworkdError(
            f"systemd-networkd described link {name} with something other than a JSON object",
            "please report it with the output of `busctl call org.freedesktop.network1 "
            f"/org/freedesktop/network1 org.freedesktop.network1.Manager DescribeLink i {ifindex}`",
        )
    admin = data.get("AdministrativeState")
    network_file = data.get("NetworkFile")
    return NetworkdLink(
        name=name,
        index=ifindex,
        admin_state=admin if isinstance(admin, str) and admin else _UNKNOWN_STATE,
        network_file=PurePosixPath(network_file)
        if isinstance(network_file, str) and network_file
        else None,
    )


def _interfaces_from_description(text: str) -> list[tuple[str, PurePosixPath]]:
    """(name, NetworkFile) of every link in Manager.Describe's JSON that has a .network file."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    interfaces = data.get("Interfaces") if isinstance(data, dict) else None
    if not isinstance(interfaces, list):
        raise NetworkdError(
            "systemd-networkd described its links with something other than a JSON object "
            "holding an Interfaces list",
            "please report it with the output of `busctl call org.freedesktop.network1 "
            "/org/freedesktop/network1 org.freedesktop.network1.Manager Describe`",
        )
    out = []
    for link in interfaces:
        if not isinstance(link, dict):
            continue
        name, network_file = link.get("Name"), link.get("NetworkFile")
        if isinstance(name, str) and name and isinstance(network_file, str) and network_file:
            out.append((name, PurePosixPath(network_file)))
    return out


def _bus_address() -> str:
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", _DEFAULT_SYSTEM_BUS)


def _leading_int(text: str) -> int | None:
    """252 from "252.38-1~deb12u1" (Debian), "256.7-1-arch", "v257" or "239 (239-58.el8)"."""
    match = re.match(r"\s*v?(\d+)", text)
    return int(match.group(1)) if match else None
