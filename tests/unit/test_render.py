"""Golden files: the exact bytes v6gen writes. Regenerate with V6GEN_UPDATE_GOLDEN=1 and review
the diff like any other code change."""

from __future__ import annotations

import configparser
import os
from ipaddress import IPv6Address
from pathlib import Path, PurePosixPath

import pytest

from v6gen.model import (
    Forwarding,
    Owner,
    Plan,
    ProxyEntry,
    ProxyKeyName,
    UplinkFailure,
    UplinkPlan,
)
from v6gen.paths import Paths
from v6gen.render import render

GOLDEN = Path(__file__).parent.parent / "golden"
ROOT = Path("/target")


def entry(address: str, *containers: str) -> ProxyEntry:
    owners = tuple(Owner(c, "probe-network", "seed", c.split("-")[1]) for c in containers)
    return ProxyEntry(IPv6Address(address), owners)


SEED = UplinkPlan(
    "uplink0",
    PurePosixPath("/etc/systemd/network/10-uplink0.network"),
    (entry("2001:db8::a:71a5", "seed-probe-1"), entry("2001:db8::a:71a6", "seed-web-1")),
    set_accept_ra=True,
)
NETPLAN = UplinkPlan(
    "eth1",
    PurePosixPath("/run/systemd/network/10-netplan-eth1.network"),
    (entry("2001:db8:1::5", "seed-mail-1"),),
    set_accept_ra=False,
)

CASES = {
    "v252": Plan((SEED,), Forwarding.SYSCTL_ONLY, 0),
    "v256": Plan((SEED,), Forwarding.LINK_KEY, 0),
    "v262": Plan((SEED, NETPLAN), Forwarding.LINK_KEY, 0, proxy_key=ProxyKeyName.PROXY_NEIGHBOR),
    "unknown_version": Plan((SEED, NETPLAN), Forwarding.LINK_KEY, None),
    "failed_uplink_kept": Plan(
        (SEED,), Forwarding.SYSCTL_ONLY, 0, failed=(UplinkFailure("eth1", "gone", ""),)
    ),
    "nothing": Plan((), Forwarding.SYSCTL_ONLY, 0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_golden(case: str) -> None:
    files = render(CASES[case], Paths(ROOT))
    text = "".join(
        f"=== {Paths(ROOT).host_path(path)}\n{content}" for path, content in sorted(files.items())
    )
    golden = GOLDEN / f"{case}.txt"
    if os.environ.get("V6GEN_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("case", sorted(CASES))
def test_networkd_files_parse_as_ini_with_only_our_keys(case: str) -> None:
    allowed = {
        "ipv6proxyndp", "ipv6proxyndpaddress", "proxyneighbor", "ipv6acceptra", "ipv6forwarding"
    }  # fmt: skip
    for path, content in render(CASES[case], Paths(ROOT)).items():
        if path.suffix != ".conf" or "sysctl.d" in str(path):
            continue
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(content)
        assert parser.sections() == ["Network"]
        assert set(parser["Network"]) <= allowed


def test_dropin_goes_next_to_the_file_networkd_uses() -> None:
    files = render(CASES["unknown_version"], Paths(ROOT))
    assert ROOT / "etc/systemd/network/10-netplan-eth1.network.d/50-v6gen.conf" in files
    assert ROOT / "etc/sysctl.d/50-v6gen.conf" in files
    assert ROOT / "var/lib/v6gen/uplinks/eth1.proxy" in files
