"""Scenario 3 on a networkd that really has bug #18378 (issue 12).

Debian's 247.3-7+deb11u5 ("247") carries the fix, so on it networkd re-adds the proxy entry
after a flap by itself and the hooks' part can't be told apart. "247-bug" is the same source
rebuilt without the fix (networkd_bug.py): there only v6gen's dispatcher hooks bring the entry
back. Both halves of the acceptance run on it, and the fixed build beside it as the contrast.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from .conftest import MakeLab
from .labhost import Lab, poll

pytestmark = pytest.mark.lab

SEED = Path(__file__).resolve().parent / "compose" / "seed.yml"
PROBE = "2001:db8::a:71a5"
# The hook's own report (dispatcher-hooks/50-v6gen), whichever state it ran for.
RESTORED = re.compile(rb"v6gen-hook: uplink0 [a-z-]+: restored 1 proxy entries")
# Issue 12's bounds. How long the entry must stay gone without the hooks: a fixed networkd
# re-adds within 0.4-2 s (networkd-facts.md), so 3 s of absence is the bug, not slowness.
GONE_FOR = 3.0
# How soon after link up the hooks must have it back. Measured here (20 flaps each): 38-139 ms,
# median 58; beside two CPU hogs 57-309 ms, median 96. The margin is the issue's, not ours.
BACK_WITHIN = 0.5


def lan_reaches(lab: Lab) -> bool:
    """The LAN reaches the container again, however long networkd takes to put the uplink's own
    address back after the flap (0.2-1 s): until then the container's reply has no route, and
    one lost echo is no verdict, so ping again."""
    return poll(lambda: lab.lan_ping(PROBE), 10)


def synced_lab(make_lab: MakeLab, networkd: str) -> Lab:
    """A lab whose container the LAN reaches after `v6gen sync`, once networkd has finished
    the reconfiguration sync's reload started: 247.3 fails a link flapped in the middle of it
    ("Could not set route: No route to host"), which is not what these tests are about. The
    hook that runs when the link is configured again is the sign it has finished."""
    lab = make_lab(networkd=networkd)
    lab.compose_up(SEED)
    log = lab.logdir / "dispatcher.log"
    seen = len(log.read_bytes())
    res = lab.v6gen("sync")
    assert res.returncode == 0, f"v6gen sync exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    configured = b"v6gen-hook: uplink0 configured: "
    assert poll(lambda: configured in log.read_bytes()[seen:], 10), "networkd never settled"
    assert PROBE in lab.proxy_entries()
    assert lab.lan_reachable(PROBE, within=3) is not None, "LAN can't reach it after sync"
    return lab


@pytest.mark.parametrize(
    "networkd", ["247", "247-bug"], ids=["debian-247.3-fixed", "rebuilt-247.3-with-bug"]
)
def test_3_networkd_alone_after_a_flap(make_lab: MakeLab, networkd: str) -> None:
    """Dispatcher stopped: only networkd may put the entry back. Debian's build does; the
    rebuilt one leaves it gone while it has the link configured again: bug #18378."""
    lab = synced_lab(make_lab, networkd)
    lab.stop_dispatcher()
    lab.flap()
    if networkd == "247":
        assert poll(lambda: PROBE in lab.proxy_entries(), 5), "the fixed 247.3 did not re-add"
        assert lan_reaches(lab)
        return
    back = poll(lambda: PROBE in lab.proxy_entries(), GONE_FOR)
    assert not back, "the rebuilt 247.3 re-added the entry: it does not have the bug"
    # Not merely slow: networkd is done with the link, and configured it without the entry.
    lab.wait_configured("uplink0")
    assert lab.link_state("uplink0").get("OPER_STATE") == "routable"
    assert PROBE not in lab.proxy_entries()
    assert not lab.lan_ping(PROBE), "the LAN reaches the container without a proxy entry"


def test_3_hooks_heal_the_bug(make_lab: MakeLab) -> None:
    """Dispatcher running, on the rebuilt 247.3: v6gen's hooks restore the entry within 500 ms
    of link up (timed as test_scenarios' test_3 does, from when `ip link set up` has returned),
    and the LAN reaches the container again."""
    lab = synced_lab(make_lab, "247-bug")
    log = lab.logdir / "dispatcher.log"
    seen = len(log.read_bytes())
    lab.flap()
    t0 = time.monotonic()
    assert poll(lambda: PROBE in lab.proxy_entries(), 5, interval=0.01), "the hooks never ran"
    took = time.monotonic() - t0
    # networkd can't have done it (test_3_networkd_alone_after_a_flap); the hook says it did.
    assert poll(lambda: RESTORED.search(log.read_bytes()[seen:]) is not None, 5), (
        "no hook reported restoring the entry"
    )
    print(f"entry back {took * 1000:.0f} ms after link up")
    assert took <= BACK_WITHIN, f"entry back only {took:.3f}s after link up"
    assert lan_reaches(lab), "LAN can't reach the container after the flap"
