"""DBusNetworkd against the real systemd-networkd in private network and mount namespaces.

Recipe from shared/notes/lab-recipe.md: tmpfs /run with a private `dbus-daemon --system`, a
read-only sysfs (so links count as initialized without udev), tmpfs /etc/systemd/network. The
test process stays outside and reaches the namespace's bus and files through /proc/PID/root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

import pytest

from v6gen.adapters.networkd import NETWORK1, NETWORK1_MANAGER, NETWORK1_PATH, DBusNetworkd
from v6gen.errors import NetworkdError
from v6gen.model import NetworkdLink
from v6gen.paths import Paths

pytestmark = pytest.mark.dbus

NETWORKD = "/lib/systemd/systemd-networkd"
NETWORK_FILE = "/etc/systemd/network/10-v6gen-uplink.network"
PROXIED = "2001:db8::a:71a5"

_T = TypeVar("_T")
# -r too: joining a mount namespace resets the root to the namespace's own, so in a chroot
# (tests/lab/test_release_python.py) the daemons would otherwise run the machine's binaries.
_JOIN = ("-n", "-m", "-r")

# Runs inside the new namespaces; prints its PID (the one to nsenter and to kill), then holds
# the namespaces open. "set -e": any failed step ends it, and the test reports stderr.
_HOLDER = f"""set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/dbus /run/systemd/netif
chown systemd-network:systemd-network /run/systemd/netif
mount -t tmpfs tmpfs /etc/systemd/network
mount -t sysfs -o ro sysfs /sys
ip link set lo up
ip link add v6up0 type veth peer name v6peer0
ip link set v6peer0 up
cat > {NETWORK_FILE} <<EOF
[Match]
Name=v6up0

[Network]
Address=2001:db8::1/64
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
echo $$
exec sleep infinity
"""


@dataclass(frozen=True)
class Lab:
    holder: int

    @property
    def root(self) -> Path:
        return Path(f"/proc/{self.holder}/root")

    @property
    def bus_address(self) -> str:
        return f"unix:path={self.root}/run/dbus/system_bus_socket"

    def run(self, *cmd: str) -> str:
        return subprocess.run(
            ["nsenter", "-t", str(self.holder), *_JOIN, *cmd],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout


def _wait_for(what: str, probe: Callable[[], _T | None], seconds: float = 60) -> _T:
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = probe()
        except NetworkdError:
            result = None
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root: runs systemd-networkd in private network and mount namespaces")
    missing = [t for t in ("unshare", "nsenter", "ip", "dbus-daemon") if not shutil.which(t)]
    missing += [] if Path(NETWORKD).exists() else [NETWORKD]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install systemd iproute2 dbus-daemon")
    # Our children must find their bus at the namespace's default path, not at a test's.
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
    errors = tmp_path / "holder.err"
    with errors.open("w") as stderr:
        unshare = subprocess.Popen(
            [
                *("unshare", "--net", "--mount", "--fork", "--propagation", "private"),
                *("--kill-child", "sh", "-c", _HOLDER),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    started: list[subprocess.Popen[bytes]] = []
    holder = None
    try:
        assert unshare.stdout is not None
        line = unshare.stdout.readline().strip()
        if not line.isdigit():
            pytest.fail(f"namespace set-up failed: {errors.read_text()}")
        holder = int(line)
        lab = Lab(holder)
        enter = ["nsenter", "-t", str(holder), *_JOIN]

        def spawn(cmd: list[str], log: str) -> None:
            # nsenter execs (no PID namespace), so the PID is the daemon's own.
            with (tmp_path / log).open("w") as out:
                started.append(
                    subprocess.Popen(enter + cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
                )

        spawn(["dbus-daemon", "--system", "--nofork", "--nopidfile"], "dbus-daemon.log")
        bus = lab.root / "run/dbus/system_bus_socket"
        _wait_for("the private system bus", lambda: bus.exists() or None, 60)
        spawn([NETWORKD], "networkd.log")
        yield lab
    finally:
        for proc in reversed(started):
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        # unshare ignores SIGTERM while it waits: ending the holder ends unshare and, with the
        # last process gone, the namespaces, the veth pair and every mount in them.
        if holder is not None:
            os.kill(holder, signal.SIGTERM)
        else:
            unshare.kill()
        unshare.wait(5)
        if unshare.stdout is not None:
            unshare.stdout.close()


def test_real_networkd(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", lab.bus_address)
    # Generous bounds throughout: they only stop a broken test from hanging, and networkd and
    # its bus may be slow to answer on a loaded machine.
    with DBusNetworkd(Paths(lab.root), timeout=30) as networkd:

        def configured() -> NetworkdLink | None:
            link = networkd.link("v6up0")
            return link if link is not None and link.admin_state == "configured" else None

        uplink = _wait_for("v6up0 to be configured", configured)
        assert uplink.network_file == PurePosixPath(NETWORK_FILE)
        (description,) = networkd._call(
            NETWORK1, NETWORK1_PATH, NETWORK1_MANAGER, "DescribeLink", "i", [uplink.index], "s"
        )
        assert {"Index", "Name", "AdministrativeState", "NetworkFile"} <= set(
            json.loads(description)
        )
        # The 247 fallback reads the same facts from 252's state file.
        assert networkd._link_from_state_file("v6up0", uplink.index) == uplink

        peer = networkd.link("v6peer0")
        assert peer is not None
        assert (peer.admin_state, peer.network_file) == ("unmanaged", None)
        assert networkd.link("nope0") is None

        # Reload must re-read the files: a new drop-in's proxy entry shows up in the kernel.
        dropin = lab.root / NETWORK_FILE.lstrip("/")
        dropin = dropin.with_name(dropin.name + ".d") / "50-v6gen.conf"
        dropin.parent.mkdir()
        dropin.write_text(f"[Network]\nIPv6ProxyNDP=yes\nIPv6ProxyNDPAddress={PROXIED}\n")
        networkd.reload()
        _wait_for(
            "the reloaded proxy entry",
            lambda: (
                PROXIED in lab.run("ip", "-6", "neigh", "show", "proxy", "dev", "v6up0") or None
            ),
        )

        # No systemd1 on this bus (as in containers): the version is the running networkd's own,
        # from the libsystemd-shared-<major>.so it maps.
        installed = subprocess.run(
            [NETWORKD, "--version"], capture_output=True, text=True, check=True
        ).stdout
        match = re.match(r"systemd (\d+)", installed)
        assert match is not None
        assert networkd.systemd_version() == int(match.group(1))
        assert networkd.systemd_version_source().startswith("the running systemd-networkd (pid ")
        assert networkd.systemd_version_running()
