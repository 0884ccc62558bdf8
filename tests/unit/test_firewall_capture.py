"""What v6gen concludes from real dockerds: API bodies and `ip6tables-save` output captured by
tests/lab/capture_firewall.py (tests/fixtures/docker/firewall/). The lab checks the same
conclusions against a LAN neighbour on sid (tests/lab/test_firewall.py)."""

from __future__ import annotations

import json
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path, PurePosixPath

import pytest

from v6gen import discover, firewall
from v6gen.config import Config
from v6gen.model import DockerFacts, HostFacts, LinkFacts, Reach
from v6gen.plan import make_plan

CAPTURED = Path(__file__).resolve().parents[1] / "fixtures/docker/firewall"
NAT, ROUTED, OPEN, INTERNAL = (
    "2001:db8::a:71a5",
    "2001:db8::a:71ad",
    "2001:db8::a:71b5",
    "2001:db8::a:71bd",
)


def _plan(release: str) -> tuple[dict[str, Reach], dict[str, str]]:
    """(address -> reach of the proxied ones, address -> why of the others)."""
    d = CAPTURED / release
    endpoints = discover.endpoints_from_list(json.loads((d / "containers.json").read_text()))
    version = json.loads((d / "version.json").read_text())["Version"]
    docker = DockerFacts(
        version, discover.networks_from_list(json.loads((d / "networks.json").read_text()))
    )
    rules = firewall.parse_ip6tables_save((d / "ip6tables-save.txt").read_text())
    link = LinkFacts(
        "uplink0", True, (IPv6Network("2001:db8::/64"),), PurePosixPath("/x.network"), True
    )
    facts = HostFacts("uplink0", {"uplink0": link}, 257, ip6_filter=rules)
    plan = make_plan(endpoints, Config(), facts, docker)
    reach = {str(e.address): e.reach for u in plan.uplinks for e in u.entries}
    left = {s.address: s.reason for s in plan.skipped}
    left |= {str(a.address): b.why for b in plan.blocked for a in b.addresses}
    return reach, left


def test_docker_28_defaults() -> None:
    reach, left = _plan("sid-28.5.2")
    assert reach == {ROUTED: Reach.PUBLISHED, OPEN: Reach.ALL}
    assert "raw-table rule" in left[NAT] and "internal network" in left[INTERNAL]


@pytest.mark.parametrize(
    "release", ["sid-28.5.2_ip6tables-false", "trixie-26.1.5", "bookworm-20.10.24"]
)
def test_dockers_that_do_not_filter_ipv6(release: str) -> None:
    reach, left = _plan(release)
    assert set(reach.values()) == {Reach.ALL} and NAT in reach
    assert set(left) <= {INTERNAL}


def test_the_nat_drop_is_read_from_the_raw_table() -> None:
    rules = firewall.parse_ip6tables_save((CAPTURED / "sid-28.5.2/ip6tables-save.txt").read_text())
    assert rules.docker_chains
    [drop] = rules.raw_prerouting
    assert (drop.target, drop.destination, drop.in_negated) == (
        "DROP",
        IPv6Network(f"{NAT}/128"),
        True,
    )
    assert drop.decides(IPv6Address(NAT), "uplink0") and not drop.decides(
        IPv6Address(NAT), drop.in_iface or ""
    )


def test_the_kernel_adapter_reads_ip6tables_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from v6gen.adapters.kernel import IpKernel

    save = tmp_path / "ip6tables-save"
    dump = CAPTURED / "sid-28.5.2/ip6tables-save.txt"
    save.write_text(f"#!/bin/sh\nexec /bin/cat {dump}\n")
    save.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    rules = IpKernel().ip6_filter()
    assert rules is not None and rules.docker_chains and len(rules.raw_prerouting) == 1
    save.write_text("#!/bin/sh\nexit 4\n")
    assert IpKernel().ip6_filter() is None  # unknown, never "Docker does not filter"
