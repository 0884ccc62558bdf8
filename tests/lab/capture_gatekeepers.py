"""Re-capture tests/fixtures/gatekeepers/ (issue 20): the host's IPv6 rules with a real firewall
enabled at its Debian defaults (and with the fix v6gen names), as the tools print them, and what
a LAN host measured against them. `python -m tests.lab.capture_gatekeepers` (root).

Each case is a bookworm lab (docker.io 20.10: no IPv6 rules of its own) with the seed's network
and a container listening on a published port (80) and an unpublished one (1234). Per case,
a directory with `ip6tables-nft-save.txt`, `ip6tables-legacy-save.txt` and `nft-list-ruleset.txt`
(the tools' whole output), and `case.json`: the uplink, bridge, address, subnet, published
ports, and what the LAN neighbour got through (ping, published, unpublished), measured right
after the dump (`v6gen sync` first: without the proxy entry the LAN reaches nothing).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from v6gen import reach

from . import packages
from .labhost import REPO, Lab, LabOptions
from .test_gatekeepers import (
    FIREWALL_PACKAGES,
    NFT_POLICY_DROP,
    PROBE,
    PUBLISHED,
    SUBNET,
    measured,
    probe_container,
    start_firewalld,
)
from .watchproc import start_dockerd, stop_dockerd


def _ufw(lab: Lab, bridge: str) -> None:
    lab.run("ufw --force enable")


def _ufw_fixed(lab: Lab, bridge: str) -> None:
    _ufw(lab, bridge)
    lab.run(f"ufw route allow in on uplink0 out on {bridge} to {SUBNET}")


def _nft_drop(lab: Lab, bridge: str) -> None:
    lab.write("/tmp/policy-drop.nft", NFT_POLICY_DROP)
    lab.run("nft -f /tmp/policy-drop.nft")


def _firewalld_fixed(lab: Lab, bridge: str) -> None:
    start_firewalld(lab)
    lab.run(reach.firewalld_fix(bridge, SUBNET, None))


def _firewalld_first(lab: Lab, bridge: str) -> None:
    """firewalld running when dockerd starts (a booted host): the bridge in zone `docker`."""
    start_firewalld(lab)
    start_dockerd(lab, stop_dockerd(lab))
    lab.run("docker start probe")


CASES: dict[str, Callable[[Lab, str], None]] = {
    "bookworm-none": lambda lab, bridge: None,
    "bookworm-ufw": _ufw,
    "bookworm-ufw-route-allow": _ufw_fixed,
    "bookworm-nft-forward-drop": _nft_drop,
    "bookworm-firewalld": lambda lab, bridge: start_firewalld(lab),
    "bookworm-firewalld-policy": _firewalld_fixed,
    "bookworm-firewalld-first": _firewalld_first,
}


def capture(name: str, out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp) / "lab", LabOptions()) as lab:
        bridge = probe_container(lab)
        CASES[name](lab, bridge)
        lab.v6gen("sync")  # the proxy entry (whatever it says of the firewall)
        dest = out / name
        dest.mkdir(parents=True, exist_ok=True)
        for tool, file in (
            ("ip6tables-nft-save", "ip6tables-nft-save.txt"),
            ("ip6tables-legacy-save", "ip6tables-legacy-save.txt"),
            ("nft list ruleset", "nft-list-ruleset.txt"),
        ):
            (dest / file).write_text(lab.run(tool).stdout)
        ping, published, unpublished = measured(lab)
        case = {
            "uplink": "uplink0",
            "uplink_address": "2001:db8::1/64",
            "bridge": bridge,
            "address": PROBE,
            "subnet": SUBNET,
            "published": [PUBLISHED],
            "measured": {"ping": ping, "published": published, "unpublished": unpublished},
        }
        (dest / "case.json").write_text(json.dumps(case, indent=2) + "\n")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "tests/fixtures/gatekeepers")
    ap.add_argument("cases", nargs="*", default=list(CASES))
    args = ap.parse_args()
    packages.ensure_packages(FIREWALL_PACKAGES)
    for name in args.cases:
        print(f"captured {capture(name, args.out)}")


if __name__ == "__main__":
    main()
