"""DBusNetworkd against a fake networkd on a private dbus-daemon: the wire contract."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from fake_networkd import NO_SUCH_LINK, FakeLink, make_networkctl, running

from v6gen.adapters.networkd import DBusNetworkd, _leading_int
from v6gen.errors import NetworkdError
from v6gen.model import NetworkdLink
from v6gen.paths import Paths
from v6gen.ports import Networkd

pytestmark = pytest.mark.dbus

LINKS = {
    "eth0": FakeLink(2, "configured", "/run/systemd/network/10-netplan-eth0.network"),
    "docker0": FakeLink(3, "unmanaged"),
}


@pytest.fixture
def adapter(tmp_path: Path) -> Iterator[DBusNetworkd]:
    # A networkctl that fails, so no test reaches the machine's real networkd by accident.
    networkctl = make_networkctl(tmp_path, status=1)
    # None of these tests hangs anything: the timeout only keeps a broken test from hanging,
    # so it is generous enough for a machine under load.
    with DBusNetworkd(Paths(tmp_path), timeout=30.0, networkctl=str(networkctl.path)) as n:
        yield n


def test_link_found_reports_network_file(system_bus: str, adapter: DBusNetworkd) -> None:
    with running(system_bus, LINKS) as fake:
        link = adapter.link("eth0")
    assert link == NetworkdLink(
        name="eth0",
        index=2,
        admin_state="configured",
        network_file=PurePosixPath("/run/systemd/network/10-netplan-eth0.network"),
    )
    assert fake.calls == [("GetLinkByName", ("eth0",)), ("DescribeLink", (2,))]


def test_unknown_link_is_none(system_bus: str, adapter: DBusNetworkd) -> None:
    with running(system_bus, LINKS) as fake:
        assert adapter.link("nope0") is None
    assert fake.members() == ["GetLinkByName"]


def test_unmanaged_link_has_no_network_file(system_bus: str, adapter: DBusNetworkd) -> None:
    with running(system_bus, LINKS):
        link = adapter.link("docker0")
    assert link == NetworkdLink("docker0", 3, "unmanaged", None)


def test_without_describe_link_reads_state_file(
    system_bus: str, adapter: DBusNetworkd, tmp_path: Path
) -> None:
    links_dir = Paths(tmp_path).netif_links
    links_dir.mkdir(parents=True)
    # Shape of a 247.3 state file (measured), comment line and all.
    (links_dir / "2").write_text(
        "# This is private data. Do not parse.\nADMIN_STATE=configured\nOPER_STATE=routable\n"
        "NETWORK_FILE=/etc/systemd/network/10-uplink.network\nDNS=\n"
    )
    (links_dir / "3").write_text("# This is private data. Do not parse.\nADMIN_STATE=unmanaged\n")
    with running(system_bus, LINKS, describe_link=False) as fake:
        eth0 = adapter.link("eth0")
        docker0 = adapter.link("docker0")
    assert eth0 == NetworkdLink(
        "eth0", 2, "configured", PurePosixPath("/etc/systemd/network/10-uplink.network")
    )
    assert docker0 == NetworkdLink("docker0", 3, "unmanaged", None)
    # UnknownMethod is remembered: the second link goes straight to the state file.
    assert fake.members() == ["GetLinkByName", "DescribeLink", "GetLinkByName"]


def test_without_describe_link_or_state_file_state_is_unknown(
    system_bus: str, adapter: DBusNetworkd
) -> None:
    with running(system_bus, LINKS, describe_link=False):
        assert adapter.link("eth0") == NetworkdLink("eth0", 2, "unknown", None)


def test_reload_is_called_exactly_once_per_call(system_bus: str, tmp_path: Path) -> None:
    networkctl = make_networkctl(tmp_path)
    with (
        running(system_bus, LINKS) as fake,
        DBusNetworkd(Paths(tmp_path), networkctl=str(networkctl.path)) as adapter,
    ):
        assert adapter.reload() is None
        assert fake.members() == ["Reload"]
        assert adapter.reload() is None
        assert fake.members() == ["Reload", "Reload"]
    assert networkctl.invocations() == []


def test_reload_falls_back_to_networkctl_and_says_so(no_bus: str, tmp_path: Path) -> None:
    networkctl = make_networkctl(tmp_path)
    with DBusNetworkd(Paths(tmp_path), networkctl=str(networkctl.path)) as adapter:
        warning = adapter.reload()
    assert networkctl.invocations() == ["reload"]
    assert warning is not None and "with `networkctl reload`: D-Bus failed" in warning


def test_reload_without_bus_or_networkctl_raises_with_hint(
    no_bus: str, adapter: DBusNetworkd
) -> None:
    with pytest.raises(NetworkdError) as raised:
        adapter.reload()
    assert "networkctl: simulated failure" in raised.value.message
    assert "networkctl reload" in raised.value.hint
    assert no_bus in raised.value.hint


def test_absent_bus_raises_networkd_error_with_hint(no_bus: str, adapter: DBusNetworkd) -> None:
    with pytest.raises(NetworkdError) as raised:
        adapter.link("eth0")
    assert no_bus in raised.value.message
    assert "is systemd-networkd running" in raised.value.hint
    assert no_bus in raised.value.hint


def test_bus_without_networkd_raises(system_bus: str, adapter: DBusNetworkd) -> None:
    with pytest.raises(NetworkdError) as raised:
        adapter.link("eth0")
    assert "org.freedesktop.DBus.Error.ServiceUnknown" in raised.value.message


# The hung service and bus below never answer, so an error at all proves the call is bounded; the
# message names the timeout that fired, and a timer never fires early, so the lower limits hold
# however loaded the machine is. No upper limit: that would only measure the machine.


def test_hung_service_fails_within_timeout(system_bus: str, tmp_path: Path) -> None:
    with running(system_bus, LINKS, hang=True), DBusNetworkd(Paths(tmp_path), timeout=0.3) as n:
        started = time.monotonic()
        with pytest.raises(NetworkdError, match=r"timed out after 0\.3 s calling GetLinkByName"):
            n.link("eth0")
        assert time.monotonic() - started >= 0.3


def test_hung_bus_fails_within_timeout_and_then_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Accepts connections (the kernel's backlog does) but never says a word: a wedged daemon.
    # Taking them off the backlog here counts the connection attempts: "then fast" is "without
    # trying again", which no clock has to judge.
    path = tmp_path / "hung-bus"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(8)
        listener.setblocking(False)
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={path}")
        with DBusNetworkd(Paths(tmp_path), timeout=0.3) as n:
            started = time.monotonic()
            with pytest.raises(NetworkdError, match=r"timed out after 0\.3 s connecting"):
                n.link("eth0")
            assert time.monotonic() - started >= 0.3
            assert _accept_all(listener) == 1
            with pytest.raises(NetworkdError, match=r"timed out after 0\.3 s connecting"):
                n.link("eth1")
            assert _accept_all(listener) == 0  # the remembered failure, not a second wait
            # close() forgets the failure: a restarted bus is tried again.
            n.close()
            started = time.monotonic()
            with pytest.raises(NetworkdError, match=r"timed out after 0\.3 s connecting"):
                n.link("eth0")
            assert time.monotonic() - started >= 0.3
            assert _accept_all(listener) == 1


def _accept_all(listener: socket.socket) -> int:
    """Take every pending connection off the listener's backlog; how many there were."""
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def test_link_vanishing_before_describe_link_is_none(
    system_bus: str, adapter: DBusNetworkd
) -> None:
    with running(system_bus, LINKS) as fake:
        fake.state.describe_error = NO_SUCH_LINK
        assert adapter.link("eth0") is None


def test_refused_call_is_networkd_error_with_root_hint(
    system_bus: str, adapter: DBusNetworkd
) -> None:
    with running(system_bus, LINKS) as fake:
        fake.state.describe_error = "org.freedesktop.DBus.Error.AccessDenied"
        with pytest.raises(NetworkdError, match="AccessDenied") as raised:
            adapter.link("eth0")
    assert "root" in raised.value.hint


def test_describe_link_that_is_not_json_is_networkd_error(
    system_bus: str, adapter: DBusNetworkd
) -> None:
    with running(system_bus, LINKS) as fake:
        fake.state.describe_text = "[]"
        with pytest.raises(NetworkdError, match="JSON object"):
            adapter.link("eth0")


SHARED = {
    **LINKS,
    "eth1": FakeLink(4, "configured", "/run/systemd/network/10-netplan-eth0.network"),
    "eth2": FakeLink(5, "configured", "/etc/systemd/network/20-eth2.network"),
}


def test_network_file_links_in_one_describe_call(system_bus: str, adapter: DBusNetworkd) -> None:
    with running(system_bus, SHARED) as fake:
        found = adapter.network_file_links()
    assert found == {
        PurePosixPath("/run/systemd/network/10-netplan-eth0.network"): frozenset({"eth0", "eth1"}),
        PurePosixPath("/etc/systemd/network/20-eth2.network"): frozenset({"eth2"}),
    }
    assert fake.members() == ["Describe"]


def test_network_file_links_without_describe_lists_links_and_reads_state_files(
    system_bus: str, adapter: DBusNetworkd, tmp_path: Path
) -> None:
    links_dir = Paths(tmp_path).netif_links
    links_dir.mkdir(parents=True)
    for index, network_file in ((2, "/etc/systemd/network/10-en.network"), (4, None)):
        line = f"NETWORK_FILE={network_file}\n" if network_file else ""
        (links_dir / str(index)).write_text(f"# private\nADMIN_STATE=configured\n{line}")
    (links_dir / "5").write_text(
        "ADMIN_STATE=configured\nNETWORK_FILE=/etc/systemd/network/10-en.network\n"
    )
    with running(system_bus, SHARED, describe_link=False) as fake:
        found = adapter.network_file_links()
        adapter.link("eth0")
    assert found == {
        PurePosixPath("/etc/systemd/network/10-en.network"): frozenset({"eth0", "eth2"})
    }
    # UnknownMethod for Describe is remembered for DescribeLink too: they came together.
    assert fake.members() == ["Describe", "ListLinks", "GetLinkByName"]


@pytest.mark.parametrize("text", ["[]", "{}", '{"Interfaces": 3}', "not json"])
def test_describe_without_an_interfaces_list_is_networkd_error(
    system_bus: str, adapter: DBusNetworkd, text: str
) -> None:
    with running(system_bus, LINKS) as fake:
        fake.state.describe_text = text
        with pytest.raises(NetworkdError, match="Interfaces list") as raised:
            adapter.network_file_links()
    assert "busctl call" in raised.value.hint


def test_one_connection_serves_all_calls_and_close_drops_it(
    system_bus: str, adapter: DBusNetworkd
) -> None:
    with running(system_bus, LINKS, systemd_version="252.38-1~deb12u1") as fake:
        adapter.link("eth0")
        adapter.link("docker0")
        adapter.reload()
        adapter.systemd_version()
        assert len(fake.unique_names()) == 2  # the fake and the adapter
        adapter.close()
        deadline = time.monotonic() + 60  # a hang guard: the daemon drops a closed peer soon
        while len(fake.unique_names()) != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(fake.unique_names()) == 1
        # Closed is not dead: the next call connects again.
        assert adapter.link("eth0") is not None


def test_version_from_dbus(system_bus: str, tmp_path: Path) -> None:
    networkctl = make_networkctl(tmp_path, stdout="systemd 247 (247.3-7+deb11u5)\n")
    with (
        running(system_bus, LINKS, systemd_version="252.38-1~deb12u1"),
        DBusNetworkd(Paths(tmp_path), networkctl=str(networkctl.path)) as adapter,
    ):
        assert adapter.systemd_version() == 252
        # The fake networkd maps no libsystemd-shared: PID 1's version stands in, and says so.
        assert adapter.systemd_version_source() == (
            "the running systemd (PID 1), not networkd itself"
        )
        assert adapter.systemd_version_running()
    assert networkctl.invocations() == []


def test_version_from_networkctl_without_systemd_on_bus(system_bus: str, tmp_path: Path) -> None:
    networkctl = make_networkctl(
        tmp_path, stdout="systemd 247 (247.3-7+deb11u5)\n+PAM +AUDIT +SELINUX\n"
    )
    with (
        running(system_bus, LINKS),
        DBusNetworkd(Paths(tmp_path), networkctl=str(networkctl.path)) as adapter,
    ):
        assert adapter.systemd_version() == 247
        assert adapter.systemd_version() == 247
        assert adapter.systemd_version_source().startswith("the installed networkctl")
        # An upgrade installs the client before networkd restarts: not known to run.
        assert not adapter.systemd_version_running()
    assert networkctl.invocations() == ["--version"]  # asked once, then remembered


def test_version_unknown_without_bus_or_networkctl(no_bus: str, adapter: DBusNetworkd) -> None:
    assert adapter.systemd_version() is None


def test_version_with_missing_networkctl_binary(no_bus: str, tmp_path: Path) -> None:
    with DBusNetworkd(Paths(tmp_path), networkctl=str(tmp_path / "absent")) as adapter:
        assert adapter.systemd_version() is None


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("252.38-1~deb12u1", 252),
        ("256.7-1-arch", 256),
        ("v257", 257),
        ("239 (239-58.el8)", 239),
        ("", None),
        ("unknown", None),
    ],
)
def test_leading_int(text: str, version: int | None) -> None:
    assert _leading_int(text) == version


def test_usable_through_the_networkd_port(system_bus: str, tmp_path: Path) -> None:
    # mypy checks this assignment: DBusNetworkd must keep satisfying the Protocol.
    port: Networkd = DBusNetworkd(Paths(tmp_path))
    with running(system_bus, LINKS):
        link = port.link("eth0")
    assert link is not None
    assert link.network_file == PurePosixPath("/run/systemd/network/10-netplan-eth0.network")
    assert isinstance(port, DBusNetworkd)
    port.close()


def test_import_does_not_load_dbus_next() -> None:
    # The CLI imports the adapter for every command, --help included.
    code = "import sys, v6gen.adapters.networkd; sys.exit('dbus_next' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=30)
