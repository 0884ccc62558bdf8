"""Issue 20's pure parts: who the gatekeepers are in rules captured from real firewalls
(tests/fixtures/gatekeepers/, tests/lab/capture_gatekeepers.py), the verdicts and fixes made
from a replay's answers, the probes' wire format, and the stored verdicts. The replay itself
needs root: tests/lab/test_replay_fixtures.py runs it on the same fixtures."""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import replace
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from v6gen import discover, firewall, gatekeepers, pathjudge, pathprobe, reach, report
from v6gen.apply import Changes
from v6gen.config import Config
from v6gen.engine import Outcome
from v6gen.errors import ExitCode
from v6gen.gatekeepers import Gatekeeper, Ruleset
from v6gen.model import DockerFacts, GateFix, HostFacts, LinkFacts, Plan, Reach, Verdict
from v6gen.plan import make_plan
from v6gen.state import State

CAPTURED = Path(__file__).resolve().parents[1] / "fixtures/gatekeepers"


def ruleset(case: str) -> Ruleset:
    d = CAPTURED / case
    return Ruleset(
        gatekeepers.normalize((d / "ip6tables-legacy-save.txt").read_text()),
        gatekeepers.normalize((d / "ip6tables-nft-save.txt").read_text()),
        gatekeepers.normalize((d / "nft-list-ruleset.txt").read_text()),
    )


def keepers(case: str) -> list[Gatekeeper]:
    return [r.gatekeeper for r in gatekeepers.rounds(ruleset(case)) if r.gatekeeper]


def test_no_firewall_no_gatekeeper() -> None:
    # Docker 20.10's own tables are IPv4 (`ip` family): they never see the LAN's IPv6.
    assert "table ip filter" in (CAPTURED / "bookworm-none/nft-list-ruleset.txt").read_text()
    assert keepers("bookworm-none") == []
    names = [r.name for r in gatekeepers.rounds(ruleset("bookworm-none"))]
    assert names == ["empty", "all"]


def test_ufw_is_one_gatekeeper_owning_the_policies() -> None:
    assert [(k.kind, k.name) for k in keepers("bookworm-ufw")] == [("ufw", "ufw")]
    (alone,) = [r for r in gatekeepers.rounds(ruleset("bookworm-ufw")) if r.gatekeeper]
    assert ":FORWARD DROP" in alone.iptables_nft
    assert "-A ufw6-before-forward" in alone.iptables_nft
    # Its ip6 filter table is replayed through ip6tables-nft-restore, not `nft -f`.
    (whole,) = [r for r in gatekeepers.rounds(ruleset("bookworm-ufw")) if r.name == "all"]
    assert "table ip6 filter" not in whole.nft
    assert gatekeepers.IPTABLES_NFT_TABLE.search(ruleset("bookworm-ufw").nft)


def test_nft_table_with_forward_policy_drop() -> None:
    (table,) = gatekeepers.nft_tables(ruleset("bookworm-nft-forward-drop").nft, frozenset())
    assert (table.family, table.name, table.forward_chain, table.forward_policy) == (
        "inet",
        "filter",
        "forward",
        "drop",
    )
    (keeper,) = keepers("bookworm-nft-forward-drop")
    assert keeper == Gatekeeper(
        "nft", "nft table inet filter, chain forward", "inet filter", "forward"
    )


def test_firewalld_is_its_table() -> None:
    assert [k.name for k in keepers("bookworm-firewalld")] == ["firewalld"]
    (keeper,) = keepers("bookworm-firewalld")
    assert (keeper.kind, keeper.table, keeper.chain) == (
        "firewalld",
        "inet firewalld",
        "filter_FORWARD",
    )


ZONES = Path(__file__).resolve().parents[1] / "fixtures/firewalld-zones"


@pytest.mark.parametrize(
    "capture", sorted(p.stem for p in ZONES.glob("*.nft")), ids=lambda c: c.split("-")[0]
)
def test_firewalld_zone_of_the_bridge_from_its_own_table(capture: str) -> None:
    """firewalld 1.3, 2.3 and 2.5 write the zone dispatch each their own way
    (tests/lab/capture_firewalld_zones.py)."""
    text = (ZONES / f"{capture}.nft").read_text()
    bridge = (ZONES / f"{capture}.bridge").read_text().strip()
    (table,) = gatekeepers.nft_tables(text, frozenset())
    keeper = gatekeepers.nft_gatekeeper(table)
    assert keeper.zone_of(bridge) == capture.rsplit("-", 1)[1]  # "docker" or "trusted"
    assert keeper.zone_of("uplink0") is None  # in no zone: the default zone's


def test_firewalld_fix_leaves_the_bridge_in_dockers_zone() -> None:
    keeper = Gatekeeper("firewalld", "firewalld", zones=(("br-0123456789ab", "docker"),))
    fix = reach.fix(keeper, "uplink0", TARGET)
    assert "--add-interface" not in fix and "--new-zone" not in fix
    assert "--policy=v6gen-lan --add-egress-zone=docker" in fix
    assert 'destination address="2001:db8::a:71a0/125" accept' in fix
    assert fix.endswith("firewall-cmd --reload")


def test_firewalld_fix_puts_a_bridge_in_no_zone_where_dockerd_would() -> None:
    fix = reach.fix(Gatekeeper("firewalld", "firewalld"), "uplink0", TARGET)
    assert "--zone=trusted" not in fix
    steps = fix.split(" && ")
    zone = steps.index("firewall-cmd --permanent --zone=docker --add-interface=br-0123456789ab")
    assert "--set-target=ACCEPT" in " ".join(steps[:zone])
    assert "--policy=v6gen-lan --add-egress-zone=docker" in fix
    # Runs again for the next network: the zone and the policy are made only when missing.
    assert "--info-zone=docker >/dev/null 2>&1 ||" in fix
    assert "--info-policy=v6gen-lan >/dev/null 2>&1 ||" in fix


def test_admin_rules_beside_docker_are_their_own_gatekeeper() -> None:
    save = (
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:DOCKER - [0:0]\n"
        "-A FORWARD -j DOCKER\n-A FORWARD -i eth0 -j DROP\n-A DOCKER -d 2001:db8::5 -j ACCEPT\n"
        "COMMIT\n"
    )
    rounds = {r.name: r for r in gatekeepers.rounds(Ruleset(iptables_nft=save))}
    docker, admin = rounds["iptables_nft:Docker"], rounds["iptables_nft:ip6tables"]
    # Docker 27+ sets the FORWARD policy when there is no ufw: its round keeps the DROP.
    assert ":FORWARD DROP" in docker.iptables_nft and "-i eth0" not in docker.iptables_nft
    assert ":FORWARD ACCEPT" in admin.iptables_nft and "-A DOCKER " not in admin.iptables_nft


def test_normalize_leaves_out_what_changes_by_itself() -> None:
    text = (CAPTURED / "bookworm-ufw/ip6tables-nft-save.txt").read_text()
    assert text.startswith("# Generated")
    counted = text.replace("[0:0]", "[12:3456]", 3)
    assert gatekeepers.normalize(counted) == gatekeepers.normalize(text)
    assert not gatekeepers.normalize(text).startswith("#")
    nft = 'chain x {\n\t\tiifname "lo" counter packets 17 bytes 1020 accept\n'
    assert gatekeepers.normalize(nft) == 'chain x {\n\t\tiifname "lo" counter accept\n'


TARGET = reach.Target(
    IPv6Address("2001:db8::a:71a5"),
    "v6net",
    "br-0123456789ab",
    IPv6Network("2001:db8::a:71a0/125"),
    (80, 443),
)
UFW = Gatekeeper("ufw", "ufw")
NFT = Gatekeeper("nft", "nft table inet filter, chain forward", "inet filter", "forward")


@pytest.mark.parametrize(
    ("passed", "want"),
    [
        ({"echo", 80, 443, 9}, (Reach.ALL, ())),
        ({"echo", 80, 443}, (Reach.PUBLISHED, (80, 443))),
        ({80}, (Reach.PORTS, (80,))),
        ({"echo"}, (Reach.ICMP, ())),
        (set(), (Reach.NONE, ())),
    ],
)
def test_classes(passed: set[str | int], want: tuple[Reach, tuple[int, ...]]) -> None:
    assert reach.classify(TARGET, frozenset(passed)) == want


def test_the_unpublished_port_is_never_a_published_one() -> None:
    every_candidate = reach.Target(TARGET.address, "n", "br", None, (7, 9, 13, 19, 37, 79))
    assert every_candidate.closed not in every_candidate.published
    assert TARGET.closed == 9


def test_short_names() -> None:
    assert Verdict(Reach.PORTS, "", (80, 443)).short == "ports:80,443"
    assert [Verdict(r, "").short for r in (Reach.ALL, Reach.ICMP, Reach.NONE)] == [
        "all",
        "icmp",
        "none",
    ]


def test_fixes_name_uplink_bridge_and_subnet() -> None:
    assert (
        reach.fix(UFW, "uplink0", TARGET)
        == "ufw route allow in on uplink0 out on br-0123456789ab to 2001:db8::a:71a0/125"
    )
    nft = reach.fix(NFT, "uplink0", TARGET)
    assert nft.startswith(
        'nft insert rule inet filter forward iifname "uplink0" oifname "br-0123456789ab" '
        "ip6 daddr 2001:db8::a:71a0/125 accept && "
    )
    assert "ip6 saddr 2001:db8::a:71a0/125 ct state established,related accept" in nft
    alone = reach.Target(TARGET.address, "v6net", "br-x", None, (), "2001:db8::a:71a5")
    assert reach.fix(UFW, "eth0", alone).endswith("to 2001:db8::a:71a5/128")


def _request() -> reach.Request:
    return reach.Request(
        "uplink0", IPv6Interface("2001:db8::1/64"), IPv6Address("2001:db8::7636"), (TARGET,)
    )


def _rounds() -> list[gatekeepers.Round]:
    return [
        gatekeepers.Round("empty"),
        gatekeepers.Round("all"),
        gatekeepers.Round("ufw", gatekeeper=UFW),
        gatekeepers.Round("nft", gatekeeper=NFT),
    ]


def _answer(**passed: list[Any]) -> dict[str, Any]:
    return {name: {"passed": [[0, p] for p in probes]} for name, probes in passed.items()}


def test_judge_names_the_gatekeeper_that_blocks() -> None:
    everything = ["echo", 80, 443, 9]
    answer = _answer(empty=everything, all=["echo"], ufw=["echo"], nft=everything)
    (verdict,) = reach.judge(_request(), _rounds(), answer).values()
    assert (verdict.short, [b.gatekeeper for b in verdict.blockers]) == ("icmp", ["ufw"])
    assert verdict.blockers[0].fix == reach.fix(UFW, "uplink0", TARGET)


def test_judge_unknown_names_the_failure() -> None:
    answer: dict[str, Any] = {
        "empty": {"passed": []},
        "all": {"error": "nft: Error: syntax error, line 7"},
    }
    (verdict,) = reach.judge(_request(), _rounds(), answer).values()
    assert verdict.reach is Reach.UNKNOWN
    assert "line 7" in verdict.why


def test_judge_sandbox_that_forwards_nothing_is_unknown() -> None:
    (verdict,) = reach.judge(_request(), _rounds(), _answer(empty=[], all=[])).values()
    assert verdict.reach is Reach.UNKNOWN


def test_combine_keeps_dockers_own_story() -> None:
    routed = Verdict(Reach.PUBLISHED, "gateway mode routed")
    only_docker = Verdict(Reach.ICMP, "", (), (GateFix("Docker", "Docker", "x"),))
    assert reach.combine(routed, only_docker) is routed
    ufw = Verdict(Reach.ICMP, "ufw", (), (GateFix("ufw", "ufw", "ufw route allow ..."),))
    assert reach.combine(Verdict(Reach.ALL, "no rules"), ufw) is ufw
    nat = Verdict(Reach.NONE, "raw drop")
    assert reach.combine(nat, ufw) is nat
    # Docker's nftables backend: its ip6tables verdict says all, the replay says less.
    nft_docker = Verdict(
        Reach.NONE, "", (), (GateFix("Docker (nft table ip6 docker)", "Docker", "x"),)
    )
    # ... and that is its gateway mode's doing, as with its ip6tables rules: not proxied, no
    # gatekeeper warning (its fix would advise the mode the network may already have).
    combined = reach.combine(Verdict(Reach.ALL, "no ip6tables"), nft_docker)
    assert (combined.reach, combined.blockers) == (Reach.NONE, ())
    assert combined.why.startswith("Docker (nft table ip6 docker) lets the LAN reach nothing")
    routed_nft = replace(nft_docker, reach=Reach.PUBLISHED)
    assert reach.combine(Verdict(Reach.ALL, "no ip6tables"), routed_nft).blockers == ()
    together = Verdict(Reach.ICMP, "the gatekeepers' rules together block it, none alone")
    assert reach.combine(Verdict(Reach.ALL, "no ip6tables"), together) is together
    # A routed network behind firewalld: the replay names Docker for the unpublished port its
    # mode keeps closed; Docker's own verdict already says so, and firewalld alone is to fix.
    fwd = GateFix("firewalld", "firewalld", "firewall-cmd ...")
    both = Verdict(Reach.NONE, "x", (), (GateFix("Docker", "Docker", "routed..."), fwd))
    combined = reach.combine(routed, both)
    assert (combined.reach, combined.blockers) == (Reach.NONE, (fwd,))
    assert combined.why.endswith("nothing, not even ICMPv6 echo: firewalld blocks the rest")


def test_stored_verdicts_round_trip() -> None:
    v = Verdict(Reach.PORTS, "why", (80,), (GateFix("ufw", "ufw", "fix"),))
    stored = json.loads(json.dumps(pathjudge._store({"2001:db8::5": v}, ("ufw",), "")))
    assert pathjudge._load(stored) == ({"2001:db8::5": v}, ("ufw",), "")


def test_route_devices_from_proc() -> None:
    # Lines as /proc/net/ipv6_route has them, cut to what adapters.firewalls keeps.
    text = (
        "20010db80000000000000000000a71a0 7d br-0123456789ab\n"
        "20010db8000000000000000000000000 40 uplink0\n"
        "00000000000000000000000000000000 00 uplink0\n"
    )
    assert pathjudge.route_devices(text) == [
        (IPv6Network("2001:db8::a:71a0/125"), "br-0123456789ab"),
        (IPv6Network("2001:db8::/64"), "uplink0"),
    ]


def _valid(packet: bytes) -> bool:
    """Whether the upper-layer checksum of an IPv6 packet verifies (sums to zero)."""
    src, dst, proto, payload = packet[8:24], packet[24:40], packet[6], packet[40:]
    pseudo = src + dst + struct.pack("!I3xB", len(payload), proto)
    return pathprobe._checksum(pseudo + payload) == 0


def test_probes_are_well_formed() -> None:
    lan, box = IPv6Address("2001:db8::7636"), IPv6Address("2001:db8::a:71a5")
    for packet in (
        pathprobe.echo_request(lan, box, 3),
        pathprobe.echo_reply(box, lan, 3),
        pathprobe.tcp_syn(lan, box, 40001, 80),
        pathprobe.tcp_syn_ack(box, lan, 80, 40001),
    ):
        assert _valid(packet), packet.hex()
        assert struct.unpack("!H", packet[4:6])[0] == len(packet) - 40
    frame = b"\0" * 12 + struct.pack("!H", pathprobe.ETH_P_IPV6)
    assert pathprobe.probe_key(frame + pathprobe.tcp_syn(lan, box, 40001, 80)) == (
        str(box),
        80,
        40001,
    )
    assert pathprobe.probe_key(frame + pathprobe.echo_reply(box, lan, 3)) == (
        str(lan),
        "echo-reply",
        3,
    )
    assert pathprobe.tcp_syn(lan, box, 1, 2)[6] == socket.IPPROTO_TCP


def _plan_with(verdict: Verdict) -> tuple[Plan, str]:
    """bookworm's docker.io 20.10 (no IPv6 rules: Docker says `all`) and its container, with
    `verdict` from the replay for the container's address."""
    d = CAPTURED.parent / "docker/firewall/bookworm-20.10.24"
    endpoints = discover.endpoints_from_list(json.loads((d / "containers.json").read_text()))
    docker = DockerFacts(
        "20.10.24", discover.networks_from_list(json.loads((d / "networks.json").read_text()))
    )
    rules = firewall.parse_ip6tables_save((d / "ip6tables-save.txt").read_text())
    link = LinkFacts(
        "uplink0", True, (IPv6Network("2001:db8::/64"),), PurePosixPath("/x.network"), True
    )
    (ep,) = [e for e in endpoints if e.address == "2001:db8::a:71a5"]
    facts = HostFacts(
        "uplink0", {"uplink0": link}, 252, ip6_filter=rules, path_verdicts={ep.address: verdict}
    )
    return make_plan([ep], Config(), facts, docker), ep.network


NOTHING = Changes({}, {}, frozenset(), frozenset(), {}, State(), State())
UFW_FIX = GateFix("ufw", "ufw", "ufw route allow in on uplink0 out on br-x to 2001:db8::a:71a0/125")


def test_a_host_firewall_blocking_all_but_icmp_is_proxied_warned_exit_9() -> None:
    plan, network = _plan_with(Verdict(Reach.ICMP, "", (), (UFW_FIX,)))
    (entry,) = plan.uplinks[0].entries
    assert entry.lan == "icmp" and not plan.blocked
    (gated,) = plan.gated
    assert (gated.network, gated.blocker, gated.lan, gated.nothing) == (
        network,
        UFW_FIX,
        "icmp",
        True,
    )
    outcome = Outcome(plan, NOTHING, dry_run=True)
    assert outcome.exit_code is ExitCode.FIREWALL
    warning, hint = report.gated_lines(plan)
    assert warning.startswith(f"warning: ufw keeps the LAN from docker network {network}:")
    assert hint == f"hint: {UFW_FIX.fix}"
    assert report.gated_json(plan)[0]["fix"] == UFW_FIX.fix


def test_some_ports_reachable_is_warned_but_exit_0() -> None:
    plan, _ = _plan_with(Verdict(Reach.PORTS, "", (443,), (UFW_FIX,)))
    (entry,) = plan.uplinks[0].entries
    assert entry.lan == "ports:443"
    assert [g.nothing for g in plan.gated] == [False]
    assert Outcome(plan, NOTHING, dry_run=True).exit_code is ExitCode.OK


def test_without_a_replay_docker_alone_decides() -> None:
    plan, _ = _plan_with(Verdict(Reach.ALL, "the LAN reaches every port"))
    (entry,) = plan.uplinks[0].entries
    assert (entry.lan, plan.gated) == ("all", ())


def test_watch_says_when_a_gatekeeper_stops_blocking() -> None:
    """watch's warnings would otherwise just stop: the sync after the admin's fix names what
    no longer blocks, once."""
    blocked, network = _plan_with(Verdict(Reach.ICMP, "", (), (UFW_FIX,)))
    fixed, _ = _plan_with(Verdict(Reach.ALL, "", (), ()))
    before = report.gated_keys(blocked)
    assert before == {("ufw", network)}
    assert report.lifted_lines(before, blocked) == []
    assert report.lifted_lines(before, fixed) == [
        f"ufw no longer keeps the LAN from docker network {network}"
    ]
    assert report.lifted_lines(report.gated_keys(fixed), fixed) == []


def test_a_replay_that_failed_is_unknown_not_dockers_all() -> None:
    """Docker 20.10 filters nothing, but other rules are on the path and their replay failed
    (a sandbox, say): the LAN column must not claim `all`, and sync says why."""
    why = "the rules could not be replayed (empty): the replay failed: [Errno 1] not permitted"
    plan, _ = _plan_with(Verdict(Reach.UNKNOWN, why))
    (entry,) = plan.uplinks[0].entries
    assert entry.lan == "unknown"
    assert not plan.gated and not plan.blocked
    assert plan.warnings == (
        "cannot tell what the host's firewalls let the LAN reach of 1 proxied address: " + why,
    )
    assert Outcome(plan, NOTHING, dry_run=True).exit_code is ExitCode.OK


def test_standard_priority_names_become_numbers_for_the_replay() -> None:
    """nft 1.0.6 refuses `hook output priority dstnat`, as newer nft prints Docker 29's tables
    (tests/fixtures/gatekeepers/sid-29.7.2-nftables-nat)."""
    (table,) = [
        t
        for t in gatekeepers.nft_tables(ruleset("sid-29.7.2-nftables-nat").nft, frozenset())
        if t.family == "ip6"
    ]
    assert "priority dstnat" not in table.text and "hook output priority -100;" in table.text
    assert "priority filter" not in table.text
    chain = "\t\ttype filter hook forward priority filter + 10; policy drop;"
    text = f"table inet t {{\n\tchain c {{\n{chain}\n\t}}\n}}\n"
    (t,) = gatekeepers.nft_tables(text, frozenset())
    assert (t.forward_chain, t.forward_policy) == ("c", "drop")
    assert "priority 10;" in t.text
