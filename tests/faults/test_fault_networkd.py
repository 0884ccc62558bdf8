"""networkd unreachable: the files and the kernel are done anyway, and the missing reload is
reported (exit 5) with what to do. Live runs in a fault host (faultns.py), where networkd never
runs; D-Bus is either absent (no socket at all) or a real dbus-daemon with nothing behind
org.freedesktop.network1 (its activation fails as on a host where networkd is disabled)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from .faultns import FaultHost
from .replay import DockerReplay, body, container

CONTAINERS = [container("one", "2001:db8::a:1"), container("two", "2001:db8::a:2")]
DROPIN = "/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf"
HINT = (
    "hint: run `networkctl reload` once networkd is reachable; the kernel entries are already "
    "in place\n"
)
BUS = "unix:path=/run/dbus/system_bus_socket"


def _assert_done(host: FaultHost) -> None:
    """Everything but the reload: drop-in, restore file, state, kernel entries, sysctls."""
    dropin = host.read(DROPIN)
    assert "IPv6ProxyNDPAddress=2001:db8::a:1\nIPv6ProxyNDPAddress=2001:db8::a:2\n" in dropin
    restore = host.read("/var/lib/v6gen/uplinks/uplink0.proxy")
    assert restore.endswith(
        "neigh replace proxy 2001:db8::a:1 dev uplink0\n"
        "neigh replace proxy 2001:db8::a:2 dev uplink0\n"
    )
    assert '"2001:db8::a:2"' in host.read("/var/lib/v6gen/state.json")
    assert host.proxy_entries() == {("uplink0", "2001:db8::a:1"), ("uplink0", "2001:db8::a:2")}
    assert host.sysctls(
        "net/ipv6/conf/all/forwarding",
        "net/ipv6/conf/uplink0/proxy_ndp",
        "net/ipv6/neigh/uplink0/proxy_delay",
    ) == {
        "net/ipv6/conf/all/forwarding": "1",
        "net/ipv6/conf/uplink0/proxy_ndp": "1",
        "net/ipv6/neigh/uplink0/proxy_delay": "0",
    }


def test_dbus_absent(fhost: FaultHost, replay: DockerReplay) -> None:
    assert not fhost.path("/run/dbus/system_bus_socket").exists()
    replay.containers = body(CONTAINERS)
    run = fhost.v6gen("sync")
    assert run.code == 5
    assert run.out.startswith("add    2001:db8::a:1 on uplink0  one\n")
    gone = (
        f"failed connecting to the D-Bus system bus at {BUS}: [Errno 2] No such file or directory"
    )
    assert run.err == (
        f"warning: cannot ask networkd about links: {gone}\n"
        f"warning: networkd was not reloaded: could not make systemd-networkd reload: {gone}; "
        "`networkctl reload` failed: Failed to connect system bus: No such file or directory\n"
        f"{HINT}"
    )
    _assert_done(fhost)


@pytest.fixture
def dbus(fhost: FaultHost) -> Iterator[int]:
    fhost.sh("mkdir -p /run/dbus")
    pid = fhost.spawn(["dbus-daemon", "--system", "--nofork", "--nopidfile"], "dbus")
    deadline = time.monotonic() + 60  # a hang guard
    while not fhost.path("/run/dbus/system_bus_socket").exists():
        assert time.monotonic() < deadline, f"dbus-daemon did not start\n{fhost.log()}"
        time.sleep(0.02)
    yield pid
    os.kill(pid, signal.SIGTERM)  # our child, not yet reaped: the PID is still ours
    fhost.wait(pid, timeout=10)


def test_networkd_not_running(fhost: FaultHost, replay: DockerReplay, dbus: int) -> None:
    replay.containers = body(CONTAINERS)
    run = fhost.v6gen("sync")
    assert run.code == 5
    lines = run.err.splitlines(keepends=True)
    assert lines[0].startswith(
        "warning: cannot ask networkd about links: org.freedesktop.network1 refused GetLinkByName:"
    )
    assert lines[1].startswith(
        "warning: networkd was not reloaded: could not make systemd-networkd reload: "
        "org.freedesktop.network1 refused Reload:"
    )
    assert "`networkctl reload` failed:" in lines[1]
    assert run.err.endswith(HINT)
    _assert_done(fhost)
