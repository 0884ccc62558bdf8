"""The replay (v6gen.pathprobe, run as v6gen runs it) on rules captured from real firewalls
(tests/fixtures/gatekeepers/, tests/lab/capture_gatekeepers.py) says what the LAN neighbour
measured against the same rules: ICMPv6 echo, the published port, an unpublished one. Root
only (a network namespace per round); no lab daemons, about a second for all cases."""

from __future__ import annotations

import json
import os
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path

import pytest

from v6gen import firewall, gatekeepers, reach
from v6gen.adapters.firewalls import HostFirewalls
from v6gen.gatekeepers import Ruleset

from .test_gatekeepers import expected_lan

CAPTURED = Path(__file__).resolve().parents[1] / "fixtures/gatekeepers"
CASES = sorted(p.name for p in CAPTURED.iterdir() if (p / "case.json").exists())

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]


@pytest.mark.parametrize("case", CASES)
def test_replay_matches_the_lan(case: str) -> None:
    d = CAPTURED / case
    spec = json.loads((d / "case.json").read_text())
    rules = Ruleset(
        gatekeepers.normalize((d / "ip6tables-legacy-save.txt").read_text()),
        gatekeepers.normalize((d / "ip6tables-nft-save.txt").read_text()),
        gatekeepers.normalize((d / "nft-list-ruleset.txt").read_text()),
    )
    target = reach.Target(
        IPv6Address(spec["address"]),
        "v6net",
        spec["bridge"],
        IPv6Network(spec["subnet"]),
        tuple(spec["published"]),
    )
    own = IPv6Interface(spec["uplink_address"])
    request = reach.Request(spec["uplink"], own, own.network[0x7636], (target,))
    rounds = gatekeepers.rounds(rules)
    answer = HostFirewalls().replay(request.to_json(rounds))["rounds"]
    assert all("error" not in r for r in answer.values()), answer
    passed = {p for _, p in answer["all"]["passed"]}
    lan = spec["measured"]
    assert ("echo" in passed, spec["published"][0] in passed, target.closed in passed) == (
        lan["ping"],
        lan["published"],
        lan["unpublished"],
    )
    (verdict,) = reach.judge(request, rounds, answer).values()
    blocked = not all(lan.values())
    assert bool(verdict.blockers) is blocked, verdict
    # What v6gen says: the replay's verdict beside Docker's own, read from its ip6tables rules
    # (none in these captures: 20.10 writes no IPv6 rules, 29's nftables backend none at all).
    ip6 = firewall.parse_ip6tables_save((d / "ip6tables-nft-save.txt").read_text())
    docker = firewall.judge(None, target.address, spec["uplink"], ip6)
    said = reach.combine(docker, verdict)
    assert said.short == expected_lan((lan["ping"], lan["published"], lan["unpublished"])), said
    if case.startswith("sid-29"):
        # Docker's nftables backend filters by its gateway mode, as with its ip6tables rules:
        # its own story (nat: not proxied), no gatekeeper to warn of.
        assert said.blockers == (), said
