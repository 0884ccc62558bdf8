"""A fake systemd-networkd (and systemd1 Version) on a private bus, recording every call, and
a fake networkctl.

It answers the way networkd 252 does on the wire (error names and signatures measured against
the real daemon, see README.md); `describe_link=False` answers like 247, which has no
DescribeLink. It runs its own asyncio loop in a thread so tests stay plain blocking code.
"""

# dbus-next's decorators are untyped and take D-Bus signatures from string annotations
# ('s', 'io'), which mypy and ruff read as undefined forward references. No `from __future__
# import annotations` here either: dbus-next 0.2.3 would then reject Reload's `-> None`.
# mypy: disable-error-code="name-defined, valid-type, untyped-decorator, no-untyped-call"
# ruff: noqa: F821

import asyncio
import contextlib
import json
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import PropertyAccess
from dbus_next.errors import DBusError
from dbus_next.message import Message
from dbus_next.service import ServiceInterface, dbus_property, method

NO_SUCH_LINK = "org.freedesktop.resolve1.NoSuchLink"  # what 247 and 252 really send

_T = TypeVar("_T")


@dataclass(frozen=True)
class FakeLink:
    index: int
    admin_state: str = "configured"
    network_file: str | None = None


@dataclass
class FakeState:
    links: dict[str, FakeLink]
    hang: bool = False
    # Set by tests: DescribeLink fails with this D-Bus error name, or answers this raw text.
    describe_error: str | None = None
    describe_text: str | None = None
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: asyncio.Event | None = None

    def record(self, member: str, *args: Any) -> None:
        with self.lock:
            self.calls.append((member, args))

    async def maybe_hang(self) -> None:
        if self.hang and self.release is not None:
            await self.release.wait()

    def by_index(self, ifindex: int) -> tuple[str, FakeLink]:
        for name, link in self.links.items():
            if link.index == ifindex:
                return name, link
        raise DBusError(NO_SUCH_LINK, f"Link {ifindex} not known")


class Manager(ServiceInterface):
    """org.freedesktop.network1.Manager as networkd 252 has it (the part v6gen uses)."""

    def __init__(self, state: FakeState) -> None:
        super().__init__("org.freedesktop.network1.Manager")
        self._state = state

    @method()
    async def GetLinkByName(self, name: "s") -> "io":
        self._state.record("GetLinkByName", name)
        await self._state.maybe_hang()
        link = self._state.links.get(name)
        if link is None:
            raise DBusError(NO_SUCH_LINK, f"Link {name} not known")
        return [link.index, f"/org/freedesktop/network1/link/_3{link.index}"]

    @method()
    async def ListLinks(self) -> "a(iso)":
        self._state.record("ListLinks")
        await self._state.maybe_hang()
        return [
            [link.index, name, f"/org/freedesktop/network1/link/_3{link.index}"]
            for name, link in self._state.links.items()
        ]

    @method()
    async def DescribeLink(self, ifindex: "i") -> "s":
        self._state.record("DescribeLink", ifindex)
        await self._state.maybe_hang()
        if self._state.describe_error is not None:
            raise DBusError(self._state.describe_error, "simulated")
        if self._state.describe_text is not None:
            return self._state.describe_text
        name, link = self._state.by_index(ifindex)
        # Key names and value shapes as 252 sends them; unmanaged links have no NetworkFile.
        description: dict[str, Any] = {
            "Index": link.index,
            "Name": name,
            "AdministrativeState": link.admin_state,
            "OperationalState": "routable",
        }
        if link.network_file is not None:
            description["NetworkFile"] = link.network_file
        return json.dumps(description)

    @method()
    async def Describe(self) -> "s":
        self._state.record("Describe")
        await self._state.maybe_hang()
        if self._state.describe_error is not None:
            raise DBusError(self._state.describe_error, "simulated")
        if self._state.describe_text is not None:
            return self._state.describe_text
        interfaces = []
        for name, link in sorted(self._state.links.items(), key=lambda item: item[1].index):
            entry: dict[str, Any] = {
                "Index": link.index,
                "Name": name,
                "AdministrativeState": link.admin_state,
            }
            if link.network_file is not None:
                entry["NetworkFile"] = link.network_file
            interfaces.append(entry)
        # 252 also lists "RoutingPolicyRules" (measured); v6gen reads only Interfaces.
        return json.dumps({"Interfaces": interfaces, "RoutingPolicyRules": []})

    @method()
    async def Reload(self) -> None:
        self._state.record("Reload")
        await self._state.maybe_hang()


class Manager247(Manager):
    """networkd 247: no DescribeLink nor Describe. Answered here with the very error sd-bus
    sends (measured) rather than left out, so the attempt shows up in the recorded calls."""

    @method()
    async def DescribeLink(self, ifindex: "i") -> "s":
        self._state.record("DescribeLink", ifindex)
        raise DBusError(
            "org.freedesktop.DBus.Error.UnknownMethod",
            "Unknown method DescribeLink or interface org.freedesktop.network1.Manager.",
        )

    @method()
    async def Describe(self) -> "s":
        self._state.record("Describe")
        raise DBusError(
            "org.freedesktop.DBus.Error.UnknownMethod",
            "Unknown method Describe or interface org.freedesktop.network1.Manager.",
        )


class SystemdManager(ServiceInterface):
    def __init__(self, version: str) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")
        self._version = version

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> "s":
        return self._version


class FakeNetworkd:
    """Owns org.freedesktop.network1 (and org.freedesktop.systemd1 when `systemd_version` is
    given) on the bus at `address` until stop()."""

    def __init__(
        self,
        address: str,
        links: dict[str, FakeLink],
        *,
        describe_link: bool = True,
        systemd_version: str | None = None,
        hang: bool = False,
    ) -> None:
        self.address = address
        self.state = FakeState(links=links, hang=hang)
        self._describe_link = describe_link
        self._systemd_version = systemd_version
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._bus: MessageBus | None = None

    @property
    def calls(self) -> list[tuple[str, tuple[Any, ...]]]:
        with self.state.lock:
            return list(self.state.calls)

    def members(self) -> list[str]:
        return [member for member, _ in self.calls]

    def start(self) -> "FakeNetworkd":
        self._thread.start()
        self._in_loop(self._setup())
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._in_loop(self._teardown())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()
        if self._bus is not None:
            # dbus-next never closes its socket itself.
            for attr in ("_stream", "_sock"):
                with contextlib.suppress(Exception):
                    getattr(self._bus, attr).close()

    def unique_names(self) -> list[str]:
        """Connections on the bus other than the daemon's own, this fake's included."""
        return self._in_loop(self._unique_names())

    def _in_loop(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    async def _setup(self) -> None:
        self.state.release = asyncio.Event()
        bus = await MessageBus(bus_address=self.address).connect()
        self._bus = bus
        manager = Manager(self.state) if self._describe_link else Manager247(self.state)
        bus.export("/org/freedesktop/network1", manager)
        await bus.request_name("org.freedesktop.network1")
        if self._systemd_version is not None:
            bus.export("/org/freedesktop/systemd1", SystemdManager(self._systemd_version))
            await bus.request_name("org.freedesktop.systemd1")

    async def _teardown(self) -> None:
        if self.state.release is not None:
            self.state.release.set()
        await asyncio.sleep(0)
        if self._bus is not None:
            self._bus.disconnect()

    async def _unique_names(self) -> list[str]:
        assert self._bus is not None
        reply = await self._bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="ListNames",
            )
        )
        assert reply is not None
        names: list[str] = reply.body[0]
        return sorted(n for n in names if n.startswith(":"))


@contextlib.contextmanager
def running(address: str, links: dict[str, FakeLink], **options: Any) -> Iterator[FakeNetworkd]:
    fake = FakeNetworkd(address, links, **options).start()
    try:
        yield fake
    finally:
        fake.stop()


@dataclass(frozen=True)
class FakeNetworkctl:
    path: Path
    log: Path

    def invocations(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def make_networkctl(tmp_path: Path, *, stdout: str = "", status: int = 0) -> FakeNetworkctl:
    """A networkctl stand-in that logs its arguments, prints `stdout`, exits with `status`."""
    log = tmp_path / "networkctl.log"
    out = tmp_path / "networkctl.out"
    out.write_text(stdout)
    script = tmp_path / "networkctl"
    script.write_text(
        f'#!/bin/sh\necho "$*" >> "{log}"\ncat "{out}"\n'
        f'[ {status} -eq 0 ] || echo "networkctl: simulated failure" >&2\nexit {status}\n'
    )
    script.chmod(0o755)
    return FakeNetworkctl(script, log)
