"""Issue 15: rootful Podman as the engine, on bookworm (4.3), trixie (5.4) and sid (5.8), and
Podman 6.1 from experimental on sid (issue 21), with no v6gen configuration at all: v6gen must
find Podman's socket by itself (the trees have no Docker).

The seed's network and address as Podman users write them (netavark's network file, see
podman.py), then the scenarios of issue 3 that matter for an engine: reachable only after sync,
gone after removal, watch following starts and removals, a link flap healed by the hooks.
"""

from __future__ import annotations

import time
from typing import Literal

import pytest

from . import podman
from .conftest import MakeLab
from .labhost import Lab, poll
from .test_firewall import PORT, REPLY, lan_tcp
from .test_scenarios import sync
from .watchproc import WatchProc

pytestmark = pytest.mark.lab

NETWORK, SUBNET, PROBE = "probe-network", "2001:db8::a:71a0/125", "2001:db8::a:71a5"
FIRST = "2001:db8::a:71a6"
# (release, engine): each release's own Podman, and Podman 6.1 from experimental on sid
# (issue 21; its tree and cgroup2: rootfs.py, release.py).
TREES = (("bookworm", "podman"), ("trixie", "podman"), ("sid", "podman"), ("sid", "podman6"))
IDS = ["bookworm", "trixie", "sid", "sid-podman6"]


@pytest.fixture(params=TREES, ids=IDS)
def lab(request: pytest.FixtureRequest, make_lab: MakeLab) -> Lab:
    release: Literal["bookworm", "trixie", "sid"]
    engine: Literal["podman", "podman6"]
    release, engine = request.param
    lab = make_lab(release=release, engine=engine)
    podman.create_network(lab, NETWORK, SUBNET)
    return lab


def test_seed_reachable_only_after_sync_without_configuration(lab: Lab) -> None:
    assert not lab.path("/etc/v6gen/config.yaml").exists()
    assert not lab.path("/usr/sbin/dockerd").exists() and not lab.path("/run/docker.sock").exists()
    podman.run_container(lab, "probe", NETWORK, PROBE)
    assert not lab.lan_ping(PROBE), "LAN reaches the container before any sync"
    out = sync(lab, "-v")
    assert "note: asked Podman " in out and "at unix:///run/podman/podman.sock" in out, out
    assert PROBE in lab.proxy_entries()
    assert lab.lan_reachable(PROBE, within=5) is not None, "LAN can't reach it after sync"
    doctor = lab.v6gen("doctor")
    assert "ok    engine: Podman " in doctor.stdout, doctor.stdout
    assert "(found its socket; no Docker here)" in doctor.stdout


def test_removed_container_is_unproxied(lab: Lab) -> None:
    podman.run_container(lab, "probe", NETWORK, PROBE)
    sync(lab)
    assert lab.lan_reachable(PROBE, within=5) is not None
    podman.remove_container(lab, "probe")
    out = sync(lab)
    assert f"remove {PROBE} on uplink0" in out, out
    assert PROBE not in lab.proxy_entries()
    assert not lab.lan_ping(PROBE)


def test_watch_proxies_a_started_container_and_drops_a_removed_one(lab: Lab) -> None:
    # Running before watch: its entry says watch's first sync is done (the chroot can't see a
    # $NOTIFY_SOCKET of the test's, and a first sync with nothing to do logs nothing).
    podman.run_container(lab, "first", NETWORK, FIRST)
    with WatchProc(lab) as proc:
        assert poll(lambda: FIRST in lab.proxy_entries(), 60), proc.text()
        assert proc.count(r"watching the events of Podman at unix:///run/podman/podman.sock")
        started = time.monotonic()
        podman.run_container(lab, "probe", NETWORK, PROBE)
        returned = time.monotonic()
        assert poll(lambda: PROBE in lab.proxy_entries(), 30), proc.text()
        print(f"podman {lab.options.release}: run -d took {returned - started:.2f} s, the entry "
              f"was there {time.monotonic() - returned:.2f} s after it returned")  # fmt: skip
        assert lab.lan_reachable(PROBE, within=5) is not None
        podman.remove_container(lab, "probe")
        assert poll(lambda: PROBE not in lab.proxy_entries(), 30), proc.text()
        assert FIRST in lab.proxy_entries()


def test_link_flap_is_healed_by_the_hooks(lab: Lab) -> None:
    podman.run_container(lab, "probe", NETWORK, PROBE)
    sync(lab)
    assert lab.lan_reachable(PROBE, within=5) is not None
    log = lab.logdir / "dispatcher.log"
    seen = len(log.read_bytes())
    lab.flap()
    assert poll(lambda: PROBE in lab.proxy_entries(), 10)
    assert lab.lan_reachable(PROBE, within=5) is not None, "LAN lost the container after a flap"
    assert poll(lambda: b"v6gen-hook: uplink0 " in log.read_bytes()[seen:], 10), "no hook ran"


def test_lan_reaches_a_port_nothing_published_and_doctor_says_so(lab: Lab) -> None:
    """netavark's firewall, per release: its rules accept what is forwarded to a container."""
    server = ("nc", "-ll", "-p", str(PORT), "-e", "echo", REPLY)
    podman.run_container(lab, "probe", NETWORK, PROBE, server)
    sync(lab)
    assert lab.lan_reachable(PROBE, within=5) is not None
    assert poll(lambda: lan_tcp(lab, PROBE, PORT), 10), "LAN can't reach the unpublished port"
    doctor = lab.v6gen("doctor").stdout
    assert f"ok    podman network {NETWORK}: the LAN reaches every port" in doctor, doctor


# Podman 6's other way to an on-link subnet: `--opt mode=unmanaged` passes the subnet check, and
# netavark then makes no bridge, gateway address or firewall rule: the bridge it names must
# exist first ("in unmanaged mode, the bridge must already exist on the host"). Here networkd
# makes it, as on a host whose networking it runs; without carrier (no container yet) only with
# ConfigureWithoutCarrier=.
BRIDGE_NETDEV = "[NetDev]\nName=podman1\nKind=bridge\n"
BRIDGE_NETWORK = (
    "[Match]\nName=podman1\n\n[Network]\nAddress=2001:db8::a:71a1/125\n"
    "ConfigureWithoutCarrier=yes\nIPv6AcceptRA=no\n"
)


def test_podman6_unmanaged_network_on_a_bridge_networkd_makes(make_lab: MakeLab) -> None:
    lab = make_lab(release="sid", engine="podman6")
    refused = lab.run(f"podman network create --ipv6 --subnet {SUBNET} plain", check=False)
    assert refused.returncode != 0 and "already used on the host" in refused.stderr, refused
    lab.run(f"podman network create --ipv6 --subnet {SUBNET} --opt mode=unmanaged {NETWORK}")
    lab.write("/etc/systemd/network/20-podman1.netdev", BRIDGE_NETDEV)
    lab.write("/etc/systemd/network/20-podman1.network", BRIDGE_NETWORK)
    lab.networkctl_reload()
    assert poll(
        lambda: "2001:db8::a:71a1" in lab.run("ip -6 addr show dev podman1", check=False).stdout,
        15,
    ), lab.logs()
    podman.run_container(lab, "probe", NETWORK, PROBE)
    assert not lab.lan_ping(PROBE), "LAN reaches the container before any sync"
    sync(lab)
    assert PROBE in lab.proxy_entries()
    assert lab.lan_reachable(PROBE, within=5) is not None, "LAN can't reach it after sync"
    assert "netavark" not in lab.run("nft list tables").stdout  # unmanaged: no rules at all
    doctor = lab.v6gen("doctor")
    assert doctor.returncode == 0, doctor.stdout
