"""Discovery on Docker API bodies captured from a real dockerd (tests/fixtures/docker)."""

from __future__ import annotations

import json
from ipaddress import IPv6Network
from pathlib import Path, PurePosixPath
from typing import Any

from v6gen.config import Config
from v6gen.discover import accept_ra_configured, endpoints_from_list
from v6gen.model import Endpoint, HostFacts, LinkFacts
from v6gen.paths import Paths
from v6gen.plan import make_plan

FIXTURES = Path(__file__).parent.parent / "fixtures" / "docker"


def load(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text())
    return data


def test_seed_probe_is_found_with_compose_labels() -> None:
    (probe,) = endpoints_from_list(load("seed_running.json"))
    assert probe.address == "2001:db8::a:71a5"
    assert probe.network.endswith("probe-network")
    assert probe.service == "probe" and probe.project
    assert probe.enable_label is None and probe.uplink_label is None


def test_mixed_host_every_network_and_label() -> None:
    found = {(e.container, e.network): e for e in endpoints_from_list(load("mixed_running.json"))}
    assert {(c, n, e.address) for (c, n), e in found.items()} == {
        ("mixed_dual_1", "mixed_net-a", "2001:db8::b:2"),
        ("mixed_dual_1", "mixed_net-b", "2001:db8::c:2"),
        ("mixed_optout_1", "mixed_net-a", "2001:db8::b:4"),
        ("mixed_other-uplink_1", "mixed_net-c", "2001:db8:1::c:2"),
    }  # the IPv4-only container has no IPv6 endpoint
    assert found["mixed_optout_1", "mixed_net-a"].enable_label == "false"
    assert found["mixed_other-uplink_1", "mixed_net-c"].uplink_label == "uplink1"


def test_stopped_containers_in_an_all_listing_are_ignored() -> None:
    running = endpoints_from_list(load("mixed_running.json"))
    assert sorted(map(repr, endpoints_from_list(load("mixed_all.json")))) == sorted(
        map(repr, running)
    )


def test_empty_listing() -> None:
    assert endpoints_from_list(load("empty.json")) == []


def test_plan_for_the_mixed_host() -> None:
    def link(name: str, prefix: str) -> LinkFacts:
        network_file = PurePosixPath(f"/etc/systemd/network/10-{name}.network")
        return LinkFacts(name, True, (IPv6Network(prefix),), network_file, managed=True)

    facts = HostFacts(
        "uplink0",
        {
            "uplink0": link("uplink0", "2001:db8::/64"),
            "uplink1": link("uplink1", "2001:db8:1::/64"),
        },
        252,
    )
    plan = make_plan(
        endpoints_from_list(load("mixed_running.json")),
        Config(uplinks=("uplink0", "uplink1")),
        facts,
    )
    assert {u.name: sorted(str(a) for a in u.addresses) for u in plan.uplinks} == {
        "uplink0": ["2001:db8::b:2", "2001:db8::c:2"],
        "uplink1": ["2001:db8:1::c:2"],
    }
    assert [s.reason for s in plan.skipped] == ["opted out (label v6gen.enable=false)"]


def test_odd_shapes_from_other_docker_versions_do_not_crash() -> None:
    odd: list[dict[str, Any]] = [
        {"Id": "abc", "Names": None, "Labels": None, "NetworkSettings": None},
        {"Id": "def", "NetworkSettings": {"Networks": {"n": None}}},
        {
            "Id": "ghi",
            "Names": ["/x"],
            "NetworkSettings": {"Networks": {"n": {"GlobalIPv6Address": 5}}},
        },
        {
            "Id": "jkl",
            "Names": ["/y"],
            "Labels": {"v6gen.uplink": 7},
            "NetworkSettings": {"Networks": {"n": {"GlobalIPv6Address": "2001:db8::9"}}},
        },
    ]
    assert endpoints_from_list(odd) == [
        Endpoint("jkl", "y", "n", "2001:db8::9", None, None, None, None)
    ]


def test_accept_ra_found_in_main_file_or_foreign_dropin(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    main = tmp_path / "etc/systemd/network/10-eth0.network"
    main.parent.mkdir(parents=True)
    main.write_text("[Match]\nName=eth0\n[Network]\nDHCP=yes\n")
    nf = PurePosixPath("/etc/systemd/network/10-eth0.network")
    assert not accept_ra_configured(paths, nf)
    own = paths.dropin("10-eth0.network")
    own.parent.mkdir(parents=True)
    own.write_text("[Network]\nIPv6AcceptRA=yes\n")
    assert not accept_ra_configured(paths, nf)  # our own drop-in doesn't count
    foreign = tmp_path / "run/systemd/network/10-eth0.network.d/20-ra.conf"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("[Network]\nIPv6AcceptRA = no\n")
    assert accept_ra_configured(paths, nf)
    foreign.write_text("[IPv6AcceptRA]\nUseDNS=no\n")  # a section of that name is not the key
    assert not accept_ra_configured(paths, nf)


def test_paused_containers_keep_their_addresses() -> None:
    paused = [dict(c, State="paused") for c in load("seed_running.json")]
    assert [e.address for e in endpoints_from_list(paused)] == ["2001:db8::a:71a5"]
