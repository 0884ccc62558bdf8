"""Re-capture tests/fixtures/firewalld-zones/: firewalld's own nftables table with a Docker
bridge bound to a zone, per release, as `nft list table inet firewalld` prints it. v6gen reads
the bridge's zone from it (gatekeepers.nft_gatekeeper) to name the zone in its fix.
`python -m tests.lab.capture_firewalld_zones [release ...]` (root).

bookworm: firewalld (1.3) started before dockerd (20.10), which binds the bridge to its zone
`docker` itself, as on a host that booted with both enabled. trixie (2.3) and sid (2.5): their
dockerd (26.1, 28.5) runs before the lab's D-Bus and so never talks to firewalld; the bridge is
bound to zone `trusted` with firewall-cmd, which writes the same dispatch rules.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from . import packages
from .labhost import REPO, Lab, LabOptions
from .test_gatekeepers import (
    FIREWALL_PACKAGES,
    install_release_package,
    probe_container,
    start_firewalld,
)
from .watchproc import start_dockerd, stop_dockerd

OUT = REPO / "tests/fixtures/firewalld-zones"


def capture(release: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        opts = LabOptions(release=release)  # type: ignore[arg-type]
        with Lab(Path(tmp) / "lab", opts) as lab:
            if release == "bookworm":
                argv = stop_dockerd(lab)
                start_firewalld(lab)
                start_dockerd(lab, argv)
                bridge, zone = probe_container(lab), "docker"
            else:
                install_release_package(lab, release, "firewalld")
                bridge, zone = probe_container(lab), "trusted"
                start_firewalld(lab)
                lab.run(f"firewall-cmd --zone={zone} --add-interface={bridge}")
            version = lab.run("firewall-cmd --version").stdout.strip()
            dest = OUT / f"{release}-{version}-{zone}.nft"
            dest.write_text(lab.run("nft list table inet firewalld").stdout)
            (OUT / f"{release}-{version}-{zone}.bridge").write_text(bridge + "\n")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("releases", nargs="*", default=["bookworm", "trixie", "sid"])
    args = ap.parse_args()
    packages.ensure_packages(FIREWALL_PACKAGES)
    for release in args.releases:
        print(f"captured {capture(release)}")


if __name__ == "__main__":
    main()
