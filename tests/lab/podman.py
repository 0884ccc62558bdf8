"""Rootful Podman on the lab host (issue 15): its API service, the image, networks, containers.

Podman runs inside a release's root filesystem built without Docker (rootfs.py, engine
"podman"), so v6gen has to find Podman's socket by itself. Containers are made with the podman
CLI, as a user makes them; v6gen sees them only through the Docker-compatible API.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from ipaddress import IPv6Network
from pathlib import Path
from typing import TYPE_CHECKING

from .image import IMAGE

if TYPE_CHECKING:
    from .labhost import Lab

SOCKET = "/run/podman/podman.sock"
NETWORKS_DIR = "/etc/containers/networks"


def start_service(lab: Lab) -> int:
    """`podman system service` on Podman's rootful socket, as podman.socket would run it;
    --time=0: never exit for being idle. Returns its PID (as seen from the machine)."""
    lab.run(f"mkdir -p {Path(SOCKET).parent}")
    proc = lab.host.spawn(
        "podman",
        ["podman", "--log-level=warn", "system", "service", "--time=0", f"unix://{SOCKET}"],
    )
    return proc.pid


def import_image(lab: Lab, tarball: Path, image: str) -> None:
    """`podman import` of the lab's busybox tarball, copied in: the chroot can't see the cache."""
    inside = "/tmp/busybox-rootfs.tar"
    lab.path(inside).write_bytes(tarball.read_bytes())
    lab.run(["podman", "import", "--quiet", inside, image], timeout=120)
    lab.run(["rm", "-f", inside])


def create_network(lab: Lab, name: str, subnet: str, bridge: str = "podman1") -> None:
    """An IPv6 bridge network whose subnet lies inside the uplink's on-link prefix, written as
    netavark's own network file. `podman network create` refuses such a subnet ("already used
    on the host or by another config": it checks every prefix on the host's interfaces), and
    has no option to skip that check; Podman reads the files in this directory as its own
    networks, the same format `podman network inspect` prints."""
    net = IPv6Network(subnet)
    doc = {
        "name": name,
        "id": hashlib.sha256(name.encode()).hexdigest(),
        "driver": "bridge",
        "network_interface": bridge,
        "created": "2026-01-01T00:00:00Z",
        "subnets": [{"subnet": str(net), "gateway": str(net[1])}],
        "ipv6_enabled": True,
        "internal": False,
        "dns_enabled": False,
        "ipam_options": {"driver": "host-local"},
    }
    lab.write(f"{NETWORKS_DIR}/{name}.json", json.dumps(doc, indent=2) + "\n")


def run_container(
    lab: Lab, name: str, network: str, address: str, command: Sequence[str] = ("sleep", "infinity")
) -> str:
    """A busybox container on `network` at `address`, detached; returns its ID. Its cgroups go
    under the lab's own parent, which lab.stop() sweeps."""
    argv = ["podman", "run", "-d", "--name", name, "--network", network, "--ip6", address]
    argv += ["--cgroup-parent", f"/{lab.cgroup_parent}", IMAGE, *command]
    return lab.run(argv, timeout=120).stdout.strip()


def remove_container(lab: Lab, name: str) -> None:
    lab.run(["podman", "rm", "--force", "--time=0", name], timeout=120)
