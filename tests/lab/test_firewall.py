"""Docker's own IPv6 firewall on Debian sid (docker.io 28.5.2, dockerd's defaults, networkd
262), issue 12: what the LAN really reaches per network gateway mode, and what v6gen says.

The ground truth is the LAN neighbour: a ping after its neighbour cache was flushed (so NDP, the
proxy, must answer) and a TCP connection to a port the container listens on but did not
publish. The expected matrix is the one measured in ../shared/notes/docker-firewall.md:

| gateway mode                   | ping | unpublished TCP | v6gen                                  |
|--------------------------------|------|-----------------|----------------------------------------|
| nat (default)                  | no   | no              | not proxied, warns, exit 9, reach none |
| routed                         | yes  | no              | proxied, reach published               |
| nat-unprotected                | yes  | yes             | proxied, reach all                     |
| nat, dockerd --ip6tables=false | yes  | yes             | proxied, reach all                     |
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import SRC_ONLY, MakeLab
from .image import IMAGE
from .labhost import DOCKERD_LAB_ARGS, Lab

pytestmark = [pytest.mark.lab, SRC_ONLY]

GATEWAY_MODE = "com.docker.network.bridge.gateway_mode_ipv6"
SUBNET = "2001:db8::a:71a0/125"
PROBE = "2001:db8::a:71a5"
PORT = 1234  # the container listens here; nothing is published
REPLY = "reachable"
# Generous: a refused or dropped connection costs this much; an open one answers in
# milliseconds. Only the outcome is asserted, never the time.
CONNECT_WAIT = 3
EXIT_BLOCKED = 9


@dataclass(frozen=True)
class Mode:
    name: str  # the gateway mode, as Docker names it
    option: str | None  # the network's driver option (None: Docker's default, nat)
    ping: bool
    tcp: bool
    reach: str  # v6gen's lan_reach for the address
    ip6tables: bool = True  # dockerd's default; off, Docker filters no IPv6 at all


MODES = (
    Mode("nat", None, ping=False, tcp=False, reach="none"),
    Mode("routed", "routed", ping=True, tcp=False, reach="published"),
    Mode("nat-unprotected", "nat-unprotected", ping=True, tcp=True, reach="all"),
    Mode("nat", None, ping=True, tcp=True, reach="all", ip6tables=False),
)
IDS = [m.name + ("" if m.ip6tables else "-ip6tables-off") for m in MODES]


def _network(lab: Lab, mode: Mode) -> str:
    """An IPv6 network like the seed's in `mode`, with a listening probe at PROBE."""
    name = f"v6-{mode.name}"
    opt = f" -o {GATEWAY_MODE}={mode.option}" if mode.option else ""
    lab.run(f"docker network create --ipv6 --subnet {SUBNET}{opt} {name}")
    # busybox nc -ll: a server that stays up for one connection after another, `echo` for each.
    lab.run(
        f"docker run -d --name probe --network {name} --ip6 {PROBE} {IMAGE}"
        f" nc -ll -p {PORT} -e echo {REPLY}"
    )
    return name


def lan_tcp(lab: Lab, addr: str, port: int) -> bool:
    """Whether the LAN neighbour gets the probe's reply over TCP."""
    res = lab.lan().run(
        f"busybox nc -w {CONNECT_WAIT} {addr} {port} </dev/null",
        check=False,
        timeout=CONNECT_WAIT + 10,
    )
    return REPLY in res.stdout


def assert_names_network(stderr: str, name: str) -> None:
    """A warning naming the network, with the gateway mode option to fix it in the warning or
    the hint line that follows it."""
    lines = stderr.splitlines()
    at = [i for i, ln in enumerate(lines) if ln.startswith(f"warning: docker network {name}:")]
    assert len(at) == 1, f"want one warning naming network {name}:\n{stderr}"
    assert any(GATEWAY_MODE in ln for ln in lines[at[0] : at[0] + 2]), stderr


def _json(lab: Lab, *args: str) -> Any:
    res = lab.v6gen(*args, "--json")
    try:
        return json.loads(res.stdout)
    except ValueError:
        pytest.fail(
            f"v6gen {' '.join(args)} --json: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        )


def _status_row(lab: Lab, addr: str) -> dict[str, Any]:
    rows = [r for r in _json(lab, "status") if r.get("address") == addr]
    assert len(rows) == 1, f"status --json has {len(rows)} rows for {addr}"
    return dict(rows[0])


@pytest.mark.parametrize("mode", MODES, ids=IDS)
def test_matrix_on_sid(make_lab: MakeLab, mode: Mode) -> None:
    off = () if mode.ip6tables else ("--ip6tables=false",)
    lab = make_lab(release="sid", dockerd_args=(*DOCKERD_LAB_ARGS, *off))
    name = _network(lab, mode)
    assert not lab.lan_ping(PROBE), "LAN reaches the container before any sync"

    res = lab.v6gen("sync")
    if mode.reach == "none":
        assert res.returncode == EXIT_BLOCKED, f"sync exit {res.returncode}\n{res.stderr}"
        assert_names_network(res.stderr, name)
        assert PROBE not in lab.proxy_entries(), "a black-holed address is proxied"
        assert_names_network(lab.v6gen("status").stderr, name)
        checks = [c for c in _json(lab, "doctor") if c.get("name") == f"docker network {name}"]
        assert [c["level"] in ("warn", "fail") for c in checks] == [True], checks
        assert GATEWAY_MODE in checks[0]["message"] + checks[0]["hint"], checks
    else:
        assert res.returncode == 0, f"sync exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        assert PROBE in lab.proxy_entries()
    assert _status_row(lab, PROBE)["lan_reach"] == mode.reach

    # The LAN's view, Docker's firewall included.
    assert (lab.lan_reachable(PROBE, within=3) is not None) is mode.ping
    assert lan_tcp(lab, PROBE, PORT) is mode.tcp
