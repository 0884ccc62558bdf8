from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from v6gen import doctor, engine
from v6gen.doctor import Level
from v6gen.errors import DockerError

from fakes import ep
from helpers import Host


@pytest.fixture
def host(tmp_path: Path) -> Host:
    h = Host(tmp_path)
    h.docker.items = [ep()]
    return h


def levels(host: Host) -> dict[str, tuple[Level, str]]:
    return {c.name: (c.level, c.message) for c in doctor.run(host.ctx())}


def test_before_sync_the_missing_pieces_fail(host: Host) -> None:
    got = levels(host)
    assert got["forwarding"][0] is Level.FAIL
    assert got["proxy_ndp uplink0"][0] is Level.FAIL
    assert got["proxy_ndp all"][0] is Level.FAIL
    assert got["kernel entries"] == (Level.FAIL, "missing 2001:db8::a:71a5")
    assert got["hooks"][0] is Level.WARN
    assert doctor.exit_code(doctor.run(host.ctx())) == 1


def test_after_sync_the_kernel_side_is_ok(host: Host) -> None:
    engine.sync(host.ctx())
    got = levels(host)
    for name in (
        "docker",
        "uplink uplink0",
        "forwarding",
        "proxy_ndp uplink0",
        "proxy_ndp all",
        "proxy_delay uplink0",
        "kernel entries",
        "systemd",
        "addresses",
        "docker firewall",
        "docker network seed_probe-network",
        "hook data",
    ):
        assert got[name][0] is Level.OK, (name, got[name])


def test_an_uplink_that_does_not_forward_itself_fails(host: Host) -> None:
    engine.sync(host.ctx())
    assert levels(host)["forwarding"] == (
        Level.OK,
        "net.ipv6.conf.all.forwarding=1, and on uplink0",
    )
    host.kernel.sysctls["net/ipv6/conf/uplink0/forwarding"] = "0"
    level, message = levels(host)["forwarding"]
    assert level is Level.FAIL and message.startswith("net.ipv6.conf.uplink0.forwarding is 0")
    engine.sync(host.ctx())
    assert levels(host)["forwarding"][0] is Level.OK


def test_every_uplink_that_does_not_forward_is_named(host: Host) -> None:
    plan = engine.sync(host.ctx()).plan
    second = replace(plan.uplinks[0], name="uplink1")
    plan = replace(plan, uplinks=(*plan.uplinks, second))
    sysctls = host.kernel.sysctls
    sysctls["net/ipv6/conf/uplink0/forwarding"] = sysctls["net/ipv6/conf/uplink1/forwarding"] = "0"
    (check,) = doctor._forwarding(host.ctx(), plan)
    assert check.level is Level.FAIL
    assert check.message.startswith(
        "net.ipv6.conf.uplink0.forwarding, net.ipv6.conf.uplink1.forwarding are 0:"
    )
    assert "IPv6Forwarding=no in their .network file" in check.hint


def test_an_uplink_networkd_failed_to_configure_fails(host: Host) -> None:
    engine.sync(host.ctx())
    link = host.networkd.links["uplink0"]
    host.networkd.links["uplink0"] = replace(link, admin_state="failed")
    level, message = levels(host)["uplink uplink0"]
    assert level is Level.FAIL
    assert message.startswith("systemd-networkd failed to configure it")


def test_stale_entry_is_reported(host: Host) -> None:
    engine.sync(host.ctx())
    host.docker.items = []
    assert levels(host)["kernel entries"] == (Level.FAIL, "stale 2001:db8::a:71a5")


def test_docker_down_is_one_failing_check(host: Host) -> None:
    host.docker.error = DockerError("refused", "is dockerd running?")
    (check,) = doctor.run(host.ctx())
    assert check.level is Level.FAIL and check.hint == "is dockerd running?"


def test_old_systemd_and_off_link_addresses_warn(host: Host) -> None:
    host.networkd.version = 247
    host.docker.items = [ep(address="2001:db8:9::1")]
    got = levels(host)
    assert got["systemd"][0] is Level.WARN and "#18378" in got["systemd"][1]
    assert got["address"][0] is Level.WARN and "not on-link" in got["address"][1]


def test_ra_uplink_with_accept_ra_off_warns(host: Host) -> None:
    main = host.root / "etc/systemd/network/10-uplink0.network"
    main.write_text(main.read_text() + "IPv6AcceptRA=no\n")
    host.kernel.ra_links.add("uplink0")
    engine.sync(host.ctx())
    assert levels(host)["router advertisements uplink0"][0] is Level.WARN
    main.write_text(main.read_text().replace("IPv6AcceptRA=no", "IPv6AcceptRA=yes"))
    assert levels(host)["router advertisements uplink0"][0] is Level.OK


def test_hook_with_wrong_mode_fails(host: Host) -> None:
    for state in ("carrier", "degraded", "routable", "configured"):
        hook = host.root / f"etc/networkd-dispatcher/{state}.d/50-v6gen"
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text("#!/bin/sh\n")
        hook.chmod(0o755)
        hook.parent.chmod(0o755)
    hook.chmod(0o775)
    level, message = levels(host)["hooks"]
    assert level is Level.FAIL
    owner = f"{os.getuid()}:{os.getgid()}"
    expected = "50-v6gen is 775 0:0" if owner == "0:0" else f"configured.d is 755 {owner}"
    assert f"/etc/networkd-dispatcher/configured.d/50-v6gen: {expected}" in message
