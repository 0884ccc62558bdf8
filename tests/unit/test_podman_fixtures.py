"""Discovery on Podman's Docker-compatible API bodies, captured from real Podman 5.4 and 5.8
(tests/fixtures/podman): the same parsers as for dockerd, and how Podman is told from Docker."""

from __future__ import annotations

import json
from ipaddress import IPv6Network
from pathlib import Path
from typing import Any

import pytest

from v6gen.adapters.docker import engine_name, event_filters
from v6gen.discover import endpoints_from_list, networks_from_list

FIXTURES = Path(__file__).parent.parent / "fixtures"
RELEASES = sorted(p.name for p in (FIXTURES / "podman").iterdir() if p.is_dir())


def load(release: str, name: str) -> Any:
    return json.loads((FIXTURES / "podman" / release / name).read_text())


def test_both_releases_are_captured() -> None:
    assert [r.split("-")[0] for r in RELEASES] == ["bookworm", "sid", "trixie"]


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
    text = (FIXTURES / "podman" / release / "events.jsonl").read_text()
    actions = [(e["Type"], e["Action"]) for e in map(json.loads, text.splitlines())]
    container = [a for t, a in actions if t == "container"]
    assert container == ["create", "init", "start", "die", "remove"]
    assert not [a for t, a in actions if t == "network"]


def test_podman_is_followed_by_event_type_only() -> None:
    """The filter names no event: Podman's event filter misses `die` and `remove`."""
    assert event_filters("Podman") == {"type": ["container", "network"]}
    assert "die" in event_filters("Docker")["event"]
