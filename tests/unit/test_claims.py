"""Issue 23 part 3 and issue 22 part 1: the DAD probe before v6gen keeps an address, the held
record, exit 10, and the announcement of what passed (v6gen.ndp, v6gen.claims, engine)."""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address
from pathlib import Path

import pytest

from v6gen import claims, engine, ndp
from v6gen.errors import ExitCode

from fakes import FakeKernel, addr, ep
from helpers import Host

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ndp"
SEED = ("uplink0", addr("2001:db8::a:71a5"))
HOLDER = "52:54:00:12:34:56"


@dataclass
class FakeLan:
    """The LAN as the probe sees it: who answers for which address. Notes what was asked and
    announced, and whether the asked address had its proxy entry while it was asked."""

    kernel: FakeKernel
    holders: dict[IPv6Address, str] = field(default_factory=dict)
    probes: list[tuple[str, frozenset[IPv6Address], bool]] = field(default_factory=list)
    announced: list[tuple[str, IPv6Address, bool]] = field(default_factory=list)

    def probe(
        self, uplink: str, addresses: Collection[IPv6Address], wait: float
    ) -> dict[IPv6Address, str]:
        assert wait == claims.PROBE_WAIT
        entries = all((uplink, a) in self.kernel.proxy for a in addresses)
        self.probes.append((uplink, frozenset(addresses), entries))
        return {a: self.holders[a] for a in addresses if a in self.holders}

    def announce(self, uplink: str, addresses: Iterable[IPv6Address], *, override: bool) -> None:
        self.announced += [(uplink, a, override) for a in addresses]


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def ctx(host: Host, lan: FakeLan) -> engine.Context:
    plain = host.ctx()
    return replace(plain, adapters=replace(plain.adapters, ndp=lan))


# ----- packets ------------------------------------------------------------------------------
def _sums_to_ones(source: IPv6Address, dest: IPv6Address, body: bytes) -> bool:
    pseudo = source.packed + dest.packed + struct.pack("!I3xB", len(body), ndp.ICMPV6)
    data = pseudo + body + b"\0" * (len(body) % 2)
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_the_probe_is_a_dad_solicitation_from_unspecified_to_the_solicited_node_group() -> None:
    target = addr("2001:db8::a:71a5")
    packet = ndp.dad_probe(target)
    assert packet[0] >> 4 == 6 and packet[6] == ndp.ICMPV6 and packet[7] == 255
    source, dest, body = IPv6Address(packet[8:24]), IPv6Address(packet[24:40]), packet[40:]
    assert source == ndp.UNSPECIFIED and dest == addr("ff02::1:ff0a:71a5")
    assert struct.unpack("!H", packet[4:6])[0] == len(body) == 24  # no link-layer option
    assert body[0] == ndp.NS and IPv6Address(body[8:24]) == target
    assert _sums_to_ones(source, dest, body)


def test_the_announcement_names_the_uplink_mac_and_sets_override_only_when_asked() -> None:
    mac = bytes.fromhex("02aabbccddee")
    for override in (True, False):
        message = ndp.advertisement(addr("2001:db8::a:71a5"), mac, override=override)
        heard = ndp.parse_answer(message)
        assert heard is not None and heard.mac == mac and heard.override is override
        assert not heard.router and not message[4] & 0x40  # neither router nor solicited
        assert len(message) == 32


@pytest.mark.parametrize(
    ("name", "override"), [("dad-answer-owner", True), ("dad-answer-proxy", False)]
)
def test_answers_captured_from_a_real_kernel_name_the_holder(name: str, override: bool) -> None:
    """Linux 6.18's answers to ndp.dad_probe: a host holding the address itself (Override)
    and one proxying it with proxy_delay 0, as a v6gen host does (no Override)."""
    message = bytes.fromhex((FIXTURES / f"{name}.hex").read_text())
    heard = ndp.parse_answer(message)
    assert heard is not None and heard.who == "a2:28:ad:9b:63:cc"
    assert heard.override is override


@pytest.mark.parametrize("junk", [b"", bytes(24), b"\x88\x00" + bytes(22) + b"\x02\x00\xff"])
def test_what_is_no_advertisement_is_no_answer(junk: bytes) -> None:
    heard = ndp.parse_answer(junk)
    assert heard is None or heard.mac is None


# ----- sync ---------------------------------------------------------------------------------
def test_sync_leaves_a_held_address_unclaimed_names_the_holder_and_exits_10(host: Host) -> None:
    lan = FakeLan(host.kernel, {SEED[1]: HOLDER})
    host.docker.items = [ep()]
    out = engine.sync(ctx(host, lan))
    # Asked with the entry in (so a host claiming it at the same moment hears this one too),
    # then taken out again.
    assert lan.probes == [("uplink0", frozenset({SEED[1]}), True)]
    assert host.kernel.batches[-1] == (frozenset(), frozenset({SEED}))
    assert out.exit_code == ExitCode.HELD
    assert SEED not in host.kernel.proxy and not host.dropin.exists()
    assert not lan.announced
    (skipped,) = out.plan.skipped
    assert skipped.held and HOLDER in skipped.reason and "another address" in skipped.reason
    assert claims.load(host.paths).by == {SEED: HOLDER}


def test_a_held_address_is_asked_again_and_claimed_once_its_holder_is_gone(host: Host) -> None:
    lan = FakeLan(host.kernel, {SEED[1]: HOLDER})
    host.docker.items = [ep()]
    engine.sync(ctx(host, lan))
    assert engine.sync(ctx(host, lan)).exit_code == ExitCode.HELD
    del lan.holders[SEED[1]]
    out = engine.sync(ctx(host, lan))
    assert out.exit_code == ExitCode.OK and SEED in host.kernel.proxy
    assert lan.announced == [("uplink0", SEED[1], True)]
    assert not host.paths.claims_file.exists()


def test_an_address_v6gen_owns_is_not_asked_again(host: Host) -> None:
    lan = FakeLan(host.kernel)
    host.docker.items = [ep()]
    engine.sync(ctx(host, lan))
    lan.holders[SEED[1]] = HOLDER  # someone else turns up later: the first holder keeps it
    assert engine.sync(ctx(host, lan)).exit_code == ExitCode.OK
    assert len(lan.probes) == 1 and SEED in host.kernel.proxy
    assert lan.announced == [("uplink0", SEED[1], True)]  # once, when it was claimed


def test_a_held_address_no_container_wants_is_forgotten(host: Host) -> None:
    lan = FakeLan(host.kernel, {SEED[1]: HOLDER})
    host.docker.items = [ep()]
    engine.sync(ctx(host, lan))
    host.docker.items = []
    assert engine.sync(ctx(host, lan)).exit_code == ExitCode.OK
    assert not host.paths.claims_file.exists()


def test_status_and_a_dry_run_leave_a_held_address_out_without_asking(host: Host) -> None:
    lan = FakeLan(host.kernel, {SEED[1]: HOLDER})
    host.docker.items = [ep()]
    engine.sync(ctx(host, lan))
    asked = len(lan.probes)
    dry = engine.sync(ctx(host, lan), dry_run=True)
    assert dry.exit_code == ExitCode.HELD and not dry.changes.add
    rows, _ = engine.status(ctx(host, lan))
    assert not any(r.wanted for r in rows) and len(lan.probes) == asked


# ----- watch's fast path --------------------------------------------------------------------
def test_the_fast_path_claims_at_once_then_withdraws_what_someone_else_answers(
    host: Host,
) -> None:
    lan = FakeLan(host.kernel, {SEED[1]: HOLDER})
    first = engine.sync(ctx(host, lan))
    assert first.snapshot is not None
    out, updated = engine.update_container(ctx(host, lan), first.snapshot, "id-x", [ep("x")])
    assert lan.probes == [("uplink0", frozenset({SEED[1]}), True)]  # the entry was in
    assert SEED not in host.kernel.proxy and SEED not in host.kernel.batches[-1][0]
    restore = host.paths.restore_file("uplink0")
    assert not restore.exists() or str(SEED[1]) not in restore.read_text()
    assert any(HOLDER in w and "withdrew" in w for w in out.warnings)
    assert not lan.announced
    assert claims.load(host.paths).by == {SEED: HOLDER}
    # The next event of the same container plans from the snapshot that knows the holder.
    again, _ = engine.update_container(ctx(host, lan), updated, "id-x", [ep("x")])
    assert again.changes.empty and SEED not in host.kernel.proxy


def test_the_fast_path_announces_with_override_what_nobody_else_answers(host: Host) -> None:
    lan = FakeLan(host.kernel)
    first = engine.sync(ctx(host, lan))
    assert first.snapshot is not None
    engine.update_container(ctx(host, lan), first.snapshot, "id-x", [ep("x")])
    assert SEED in host.kernel.proxy
    assert lan.announced == [("uplink0", SEED[1], True)]


def test_an_announcement_is_repeated_twice_retrans_timer_apart() -> None:
    """RFC 4861 §7.2.6: at most 3 unsolicited NAs per claim, at least RetransTimer apart."""
    repeats = ndp.Repeats()
    assert repeats.wait(0.0) is None
    repeats.add("uplink0", [SEED[1]], 10.0)
    assert repeats.wait(10.0) == ndp.RETRANS and repeats.due(10.5) == {}
    sent = [t for t in (11.0, 11.5, 12.0, 12.5, 13.0, 14.0) if repeats.due(t)]
    assert sent == [11.0, 12.0] and repeats.wait(20.0) is None


def test_clean_forgets_what_others_held_and_a_sync_without_prober_keeps_it(host: Host) -> None:
    lan = FakeLan(host.kernel, {SEED[1]: HOLDER})
    host.docker.items = [ep()]
    engine.sync(ctx(host, lan))
    # No prober (--root, tests): nothing asked, the record stands and still keeps it out.
    assert engine.sync(host.ctx()).exit_code == ExitCode.HELD
    assert claims.load(host.paths).by == {SEED: HOLDER}
    engine.clean(host.ctx())
    assert not host.paths.claims_file.exists()
