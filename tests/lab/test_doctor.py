"""`v6gen doctor` in the real lab: every warn/fail case it knows is made to happen for real and
must be detected, precisely (every other check stays ok), and the hint it gives (`v6gen sync`,
mostly) must repair it. A healthy lab after a sync is all ok, exit 0.

Two cases cannot happen on their own in a lab of this size and are made so, as stated where
they are: the uplink "relying on router advertisements" in the static lab is an address with a
finite lifetime added by hand (what SLAAC makes; the RA-only lab shows the real thing), and
"networkd-dispatcher not running" runs doctor in a private PID namespace after the lab's
dispatcher was really stopped, because doctor looks for the process in its PID namespace and
other labs running on the same machine have dispatchers of their own.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import MakeLab
from .labhost import REPO, Lab

pytestmark = pytest.mark.lab

COMPOSE = Path(__file__).resolve().parent / "compose"
SEED = COMPOSE / "seed.yml"
PROBE = "2001:db8::a:71a5"
NETWORK_FILE = "/etc/systemd/network/10-uplink0.network"
HOOK = "/etc/networkd-dispatcher/routable.d/50-v6gen"
# An extra container whose address lies outside uplink0's 2001:db8::/64.
OFF_LINK = """\
version: "2.4"
services:
  far:
    image: v6gen-busybox:lab
    command: ["sleep", "infinity"]
    networks:
      far-net:
        ipv6_address: 2001:db8:5::2
networks:
  far-net:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 2001:db8:5::/125
"""
HEALTHY = {
    "docker",
    "engine",
    "docker firewall",
    "firewalls",  # issue 20: no IPv6 firewall rules on the forward path
    "proxy_ndp all",
    "hook data",
    "uplink uplink0",
    "proxy_ndp uplink0",
    "proxy_delay uplink0",
    "kernel entries",
    "forwarding",
    "systemd",
    "hooks",
    "networkd-dispatcher",
    "addresses",
}

Checks = list[dict[str, str]]


def doctor(lab: Lab, *, private_pids: bool = False) -> tuple[int, Checks]:
    if private_pids:
        cmd = [
            "unshare", "--pid", "--fork", "--mount-proc", "--",
            "env", "-u", "DOCKER_HOST", "-u", "DBUS_SYSTEM_BUS_ADDRESS",
            f"PYTHONPATH={REPO / 'src'}", sys.executable, "-m", "v6gen", "doctor", "--json",
        ]  # fmt: skip
        res = lab.run(cmd, check=False)
    else:
        res = lab.v6gen("doctor", "--json")
    assert res.returncode in (0, 1), f"doctor exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    checks: Checks = json.loads(res.stdout)
    assert res.returncode == (1 if any(c["level"] == "fail" for c in checks) else 0)
    return res.returncode, checks


def not_ok(checks: Checks) -> dict[str, tuple[str, str]]:
    return {c["name"]: (c["level"], c["message"]) for c in checks if c["level"] != "ok"}


def sync(lab: Lab) -> None:
    res = lab.v6gen("sync")
    assert res.returncode == 0, f"sync exit {res.returncode}\n{res.stdout}\n{res.stderr}"


def all_ok(lab: Lab) -> Checks:
    code, checks = doctor(lab)
    assert (code, not_ok(checks)) == (0, {})
    names = {c["name"] for c in checks}
    # One line per Docker network with IPv6; their names come from compose.
    assert {n for n in names if not n.startswith("docker network ")} == HEALTHY
    assert any(n.startswith("docker network ") for n in names)
    return checks


def detected(lab: Lab, expected: dict[str, tuple[str, str]], *, private_pids: bool = False) -> None:
    """Exactly these checks are not ok, with these levels and messages (message: a prefix)."""
    _, checks = doctor(lab, private_pids=private_pids)
    got = not_ok(checks)
    assert set(got) == set(expected), got
    for name, (level, message) in expected.items():
        assert got[name][0] == level and got[name][1].startswith(message), (name, got[name])


def test_every_breakage_is_detected_and_sync_repairs_it(lab: Lab, tmp_path: Path) -> None:
    lab.compose_up(SEED)
    # Before any sync: nothing of v6gen's is in place yet (forwarding is: dockerd switched it on
    # for its IPv6 network).
    detected(
        lab,
        {
            "proxy_ndp uplink0": ("fail", "net.ipv6.conf proxy_ndp is off"),
            "proxy_ndp all": ("fail", "net.ipv6.conf.all.proxy_ndp is 0"),
            "proxy_delay uplink0": ("warn", "80 (config: 0): proxied answers wait up to 800 ms"),
            "kernel entries": ("fail", f"missing {PROBE}"),
            "hooks": ("warn", "no networkd-dispatcher hooks installed"),
        },
    )
    sync(lab)
    checks = all_ok(lab)
    by_name = {c["name"]: c["message"] for c in checks}
    assert by_name["uplink uplink0"].startswith(f"managed by networkd via {NETWORK_FILE}")
    assert re.fullmatch(
        r"252 \(the running systemd-networkd \(pid \d+\)\): not affected by bug #18378",
        by_name["systemd"],
    ), by_name["systemd"]

    breakages: list[tuple[str, dict[str, tuple[str, str]]]] = [
        (
            "sysctl -qw net.ipv6.conf.all.forwarding=0",
            {"forwarding": ("fail", "net.ipv6.conf.all.forwarding is 0")},
        ),
        (
            "sysctl -qw net.ipv6.conf.uplink0.forwarding=0",
            {"forwarding": ("fail", "net.ipv6.conf.uplink0.forwarding is 0")},
        ),
        (
            "sysctl -qw net.ipv6.conf.uplink0.proxy_ndp=0",
            {"proxy_ndp uplink0": ("fail", "net.ipv6.conf proxy_ndp is off")},
        ),
        (
            "sysctl -qw net.ipv6.conf.all.proxy_ndp=0",
            {"proxy_ndp all": ("fail", "net.ipv6.conf.all.proxy_ndp is 0: a LAN host")},
        ),
        (
            "sysctl -qw net.ipv6.neigh.uplink0.proxy_delay=50",
            {"proxy_delay uplink0": ("warn", "50 (config: 0): proxied answers wait up to 500 ms")},
        ),
        (
            f"ip -6 neigh del proxy {PROBE} dev uplink0",
            {"kernel entries": ("fail", f"missing {PROBE}")},
        ),
        (
            "chmod 1777 /var/lib/v6gen",  # as a bare tmpfs, or an admin's umask, makes it
            {"hook data": ("fail", "the hook would restore nothing after a link flap")},
        ),
        (
            f"chmod 0775 {HOOK}",
            {"hooks": ("fail", f"{HOOK}: 50-v6gen is 775 0:0")},
        ),
    ]
    for command, expected in breakages:
        lab.run(command)
        detected(lab, expected)  # exactly these: so the previous one was put right
        sync(lab)  # the hint: `v6gen sync` puts it right

    # networkd-dispatcher stopped (for real; see the module docstring for the PID namespace).
    lab.stop_dispatcher()
    detected(
        lab,
        {"networkd-dispatcher": ("warn", "not running: after a link flap on systemd < 248")},
        private_pids=True,
    )
    lab.start_dispatcher()

    # The uplink relies on router advertisements (an address with a finite lifetime, as SLAAC
    # makes), while its own .network says IPv6AcceptRA=no.
    assert "IPv6AcceptRA=no" in lab.read(NETWORK_FILE)
    slaac_like = "2001:db8::5:1/64 dev uplink0 valid_lft 3600 preferred_lft 3600"
    lab.run(f"ip -6 addr add {slaac_like}")
    detected(
        lab,
        {
            "router advertisements uplink0": (
                "warn",
                "the uplink relies on RA but its config turns IPv6AcceptRA off",
            )
        },
    )
    lab.run(f"ip -6 addr del {slaac_like}")

    # A container address outside the uplink's prefix.
    far = tmp_path / "far.yml"
    far.write_text(OFF_LINK)
    lab.compose_up(far, project="far")
    # The address, and its network's subnet against the uplink's prefix (issue 23).
    detected(
        lab,
        {
            "address": ("warn", "2001:db8:5::2 (far_far_1): not on-link for uplink0"),
            "docker network far_far-net prefix": (
                "warn",
                "2001:db8:5::/125 is outside uplink0's prefixes (2001:db8::/64)",
            ),
        },
    )
    lab.compose_down(far, project="far")
    all_ok(lab)  # and so every breakage above was put right

    # Containers gone, their entries still in the kernel: stale.
    lab.compose_down(SEED)
    detected(
        lab,
        {
            "docker": ("warn", "reachable, but no network has IPv6 enabled"),
            "kernel entries": ("fail", f"stale {PROBE}"),
        },
    )
    sync(lab)
    assert PROBE not in lab.proxy_entries()


def test_uplink_unmanaged(lab: Lab) -> None:
    lab.write("/etc/v6gen/config.yaml", "uplinks: [uplink0]\n")
    lab.compose_up(SEED)
    sync(lab)
    all_ok(lab)
    # networkd no longer has a .network file for uplink0: it leaves the link unmanaged.
    lab.run(f"mv {NETWORK_FILE} /etc/systemd/network/10-uplink0.network.off")
    lab.networkctl_reload()
    unmanaged = _poll(lambda: lab.link_state("uplink0").get("ADMIN_STATE") == "unmanaged", 10)
    assert unmanaged, f"uplink0 still managed: {lab.link_state('uplink0')}"
    _, checks = doctor(lab)
    got = [(c["name"], c["level"], c["message"]) for c in checks if c["level"] != "ok"]
    assert ("uplink uplink0", "fail", "not managed by systemd-networkd") in got
    assert ("uplink uplink0", "fail", "uplink uplink0 is not managed by systemd-networkd") in got


def test_docker_down(make_lab: MakeLab) -> None:
    lab = make_lab(docker=False)
    code, checks = doctor(lab)
    assert code == 1
    assert [(c["name"], c["level"]) for c in checks] == [("docker", "fail")]
    assert checks[0]["message"].startswith("cannot ask Docker for its containers:")
    assert checks[0]["hint"].startswith("is dockerd running?")


def test_router_advertisements_on_a_slaac_uplink(make_lab: MakeLab) -> None:
    lab = make_lab(ra_only=True)
    lab.compose_up(SEED)
    sync(lab)

    def slaac() -> bool:
        return "dynamic" in lab.run("ip -6 addr show dev uplink0 scope global").stdout

    # The reload after the sync drops the SLAAC address; the next advertisement brings it back.
    assert _poll(slaac, 10), "no SLAAC address after the sync"
    _, checks = doctor(lab)
    ra = [c for c in checks if c["name"] == "router advertisements uplink0"]
    assert [(c["level"], c["message"]) for c in ra] == [("ok", "relied on and still accepted")]
    # An admin's drop-in that turns RAs off (networkd not reloaded yet: doctor reads the files).
    lab.write(
        "/etc/systemd/network/10-uplink0.network.d/60-admin.conf", "[Network]\nIPv6AcceptRA=no\n"
    )
    _, checks = doctor(lab)
    ra = [c for c in checks if c["name"] == "router advertisements uplink0"]
    assert [(c["level"], c["message"]) for c in ra] == [
        ("warn", "the uplink relies on RA but its config turns IPv6AcceptRA off")
    ]


def _poll(cond: Callable[[], bool], timeout: float) -> bool:
    from .labhost import poll

    return poll(cond, timeout)
