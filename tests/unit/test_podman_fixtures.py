"""Discovery on Podman's Docker-compatible API bodies, captured from real Podman 5.4 and 5.8
(tests/fixtures/podman): the same parsers as for dockerd, and how Podman is told from Docker."""

from __future__ import annotations

import json
from ipaddress import IPv6Network
from pathlib import Path
from typing import Any

import pytest

from v6gen.adapters.docker import engine_name, event_filters
from v6gen.discover import endpoints_from_list, networks_from_list, starting_endpoints
from v6gen.instant import steps

FIXTURES = Path(__file__).parent.parent / "fixtures"
RELEASES = sorted(p.name for p in (FIXTURES / "podman").iterdir() if p.is_dir())


def load(release: str, name: str) -> Any:
    return json.loads((FIXTURES / "podman" / release / name).read_text())


def test_both_releases_are_captured() -> None:
    assert [r.split("-")[0] for r in RELEASES] == ["bookworm", "sid", "sid", "trixie"]


@pytest.mark.parametrize("release", RELEASES)
def test_version_names_the_podman_engine(release: str) -> None:
    about = load(release, "version.json")
    assert engine_name(about) == "Podman"
    assert about["Version"] == release.split("-", 1)[1]


def test_dockerd_is_docker() -> None:
    assert engine_name(json.loads((FIXTURES / "docker" / "version.json").read_text())) == "Docker"
    assert engine_name({}) == "Docker" and engine_name(None) == "Docker"


@pytest.mark.parametrize("release", RELEASES)
def test_the_probe_and_its_network_are_found(release: str) -> None:
    (probe,) = endpoints_from_list(load(release, "containers.json"))
    assert (probe.container, probe.network, probe.address) == (
        "probe",
        "probe-network",
        "2001:db8::a:71a5",
    )
    networks = networks_from_list(load(release, "networks.json"))
    net = networks["probe-network"]
    assert (net.driver, net.ipv6, net.internal) == ("bridge", True, False)
    assert net.subnets == (IPv6Network("2001:db8::a:71a0/125"),)
    assert not networks["bridge"].ipv6  # Podman's default network "podman", as Docker names it


@pytest.mark.parametrize("release", RELEASES)
def test_events_differ_from_dockerd(release: str) -> None:
    """Why watch resyncs on start and die rather than following connect events: Podman sends
    none, and removal is `remove`, not `destroy`."""
    by_name: dict[str, list[str]] = {}
    for event in load_events(release):
        if event["Type"] == "container":
            by_name.setdefault(event["Actor"]["Attributes"]["name"], []).append(event["Action"])
    assert by_name == {
        "waiting": ["create", "init", "remove"],
        "probe": ["create", "init", "start", "die", "remove"],
    }
    assert not [e for e in load_events(release) if e["Type"] == "network"]


def load_events(release: str) -> list[dict[str, Any]]:
    text = (FIXTURES / "podman" / release / "events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("release", RELEASES)
def test_init_is_when_the_fast_path_asks(release: str) -> None:
    """Podman's `init` comes once the networks are set up: the container, created and not
    started, is listed with its address already, so the fast path can proxy it before `start`."""
    probe = [e for e in load_events(release) if e["Actor"]["Attributes"].get("name") == "probe"]
    until_start = probe[: [e["Action"] for e in probe].index("start")]
    (step,) = steps(until_start).values()
    assert (step.look, step.gone, step.network) == (True, False, None)
    assert next(iter(steps(probe).values())).gone
    (waiting,) = load(release, "initialized.json")
    assert waiting["State"] == "created"
    (found,) = starting_endpoints(waiting)
    assert (found.container, found.network, found.address) == (
        "waiting",
        "probe-network",
        "2001:db8::a:71a6",
    )


def test_podman_is_followed_by_event_type_only() -> None:
    """The filter names no event: Podman's event filter misses `die` and `remove`."""
    assert event_filters("Podman") == {"type": ["container", "network"]}
    assert "die" in event_filters("Docker")["event"]
