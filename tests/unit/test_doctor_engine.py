"""doctor's engine lines: which engine v6gen asks, the one it leaves alone, rootless Podman."""

from __future__ import annotations

from ipaddress import IPv6Network
from pathlib import Path

import pytest

from v6gen import doctor
from v6gen.detect import PODMAN, EngineChoice
from v6gen.doctor import Check, Level
from v6gen.errors import DockerError
from v6gen.model import DockerNetwork

from fakes import ep
from helpers import Host

PODMAN_URL = "unix:///run/podman/podman.sock"
ROOTLESS = Path("/run/user/1000/podman/podman.sock")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    h = Host(tmp_path)
    h.docker.items = [ep()]
    return h


def engine_checks(host: Host) -> list[Check]:
    return [c for c in doctor.run(host.ctx()) if c.name == "engine"]


def test_podman_found_alone_is_named_with_its_version(host: Host) -> None:
    host.docker.engine = EngineChoice(PODMAN_URL, PODMAN, "found its socket; no Docker here")
    host.docker.version = "5.8.0"
    (check,) = engine_checks(host)
    assert (check.level, check.message) == (
        Level.OK,
        f"Podman 5.8.0 at {PODMAN_URL} (found its socket; no Docker here)",
    )
    docker = next(c for c in doctor.run(host.ctx()) if c.name == "docker")
    assert "(Podman 5.8.0)" in docker.message


def test_the_other_engine_is_a_warning_with_the_setting_that_follows_it(host: Host) -> None:
    host.docker.engine = EngineChoice(
        "unix:///run/docker.sock", "Docker", "Docker's socket", (f"Podman at {PODMAN_URL}",)
    )
    ok, other = engine_checks(host)
    assert ok.level is Level.OK and other.level is Level.WARN
    assert other.message.startswith(f"Podman at {PODMAN_URL} is not followed")
    assert other.hint == f"to follow it instead: docker_host: {PODMAN_URL}"


def test_only_rootless_podman_fails_clearly_when_nothing_answers(host: Host) -> None:
    host.docker.engine = EngineChoice(None, "Docker", "no engine's socket found", (), (ROOTLESS,))
    host.docker.error = DockerError("cannot ask Docker for its containers: refused", "")
    docker, rootless = doctor.run(host.ctx())
    assert docker.level is Level.FAIL
    assert rootless.level is Level.FAIL and str(ROOTLESS) in rootless.message
    assert "no host-side address" in rootless.message and "rootful" in rootless.hint
    assert doctor.exit_code([rootless]) == 1


def test_docker_host_naming_rootless_podman_fails(host: Host) -> None:
    url = f"unix://{ROOTLESS}"
    host.docker.engine = EngineChoice(url, PODMAN, "docker_host in the config")
    (check,) = engine_checks(host)
    assert check.level is Level.FAIL and check.message.startswith(
        f"docker_host names rootless Podman ({url})"
    )


def test_docker_host_environment_naming_rootless_podman_fails(host: Host) -> None:
    url = f"unix://{ROOTLESS}"
    host.docker.engine = EngineChoice(None, PODMAN, "DOCKER_HOST", env=url)
    (check,) = engine_checks(host)
    assert check.level is Level.FAIL
    assert check.message.startswith(f"DOCKER_HOST names rootless Podman ({url})")


def test_rootless_beside_a_rootful_engine_is_a_warning(host: Host) -> None:
    host.docker.engine = EngineChoice(PODMAN_URL, PODMAN, "found", (), (ROOTLESS,))
    ok, note = engine_checks(host)
    assert ok.level is Level.OK and note.level is Level.WARN
    assert note.message.startswith(f"rootless Podman at {ROOTLESS} is not followed")


def podman_host(host: Host, networks: dict[str, DockerNetwork]) -> Host:
    host.docker.engine = EngineChoice(PODMAN_URL, PODMAN, "found its socket; no Docker here")
    host.docker.version = "5.8.6"
    host.docker.networks = networks
    return host


def test_podman_networks_are_named_as_podman_with_netavark_verdict(host: Host) -> None:
    net = DockerNetwork("probe-network", subnets=(IPv6Network("2001:db8::a:71a0/125"),))
    checks = {c.name: c for c in doctor.run(podman_host(host, {"probe-network": net}).ctx())}
    assert checks["podman firewall"].level is Level.OK
    assert "netavark accepts" in checks["podman firewall"].message
    network = checks["podman network probe-network"]
    assert (network.level, network.message) == (
        Level.OK,
        "the LAN reaches every port of its containers",
    )
    assert not [n for n in checks if n.startswith("docker ") and n != "docker"]


def test_podman_without_an_ipv6_network_hints_at_netavarks_file(host: Host) -> None:
    host.docker.items = []
    checks = {
        c.name: c
        for c in doctor.run(
            podman_host(host, {"bridge": DockerNetwork("bridge", ipv6=False)}).ctx()
        )
    }
    docker = checks["docker"]
    assert docker.level is Level.WARN and "/etc/containers/networks/NAME.json" in docker.hint
