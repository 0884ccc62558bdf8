"""A Docker Engine API replay for 1,000 containers, built on tests/dockerreplay.py's server and
handler (same routing and request counting), plus:

- keep-alive (HTTP/1.1), as dockerd does, so the per-request cost is not inflated by a
  reconnect per request (which would flatter v6gen's 2 requests against the SDK default's 1,002);
- any route's body can be set, including GET /containers/<id>/json for the SDK's default listing;
- synthetic container lists templated from captured bodies: each entry of GET /containers/json is
  tests/fixtures/docker/seed_running.json's entry with a new id, name, compose labels, network
  and address; each inspect body is the lab dockerd's inspect of that same container, edited the
  same way.
"""

from __future__ import annotations

import copy
import hashlib
import json
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from tests.dockerreplay import FIXTURES, DockerReplay, _Handler


class _KeepAliveHandler(_Handler):
    protocol_version = "HTTP/1.1"


class Replay(DockerReplay):
    handler = _KeepAliveHandler

    def __init__(self, socket_path: Path, bodies: dict[str, bytes]) -> None:
        socket_path.unlink(missing_ok=True)
        super().__init__(socket_path, bodies.get("/containers/json", b"[]"))
        self.set_bodies(bodies)

    def set_bodies(self, bodies: dict[str, bytes]) -> None:
        self._server.bodies.update(bodies)

    def total(self) -> int:
        return sum(self.requests.values())


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def network_name(k: int) -> str:
    return f"bench_net{k:02d}"


def address(i: int, networks: int) -> tuple[str, str]:
    """(network, address) of container i: round-robin over the networks, each network a /120
    inside the lab uplink's 2001:db8::/64."""
    k, j = i % networks, i // networks
    base = int(IPv6Address(f"2001:db8::{0x100 + k:x}:0"))
    return network_name(k), str(IPv6Address(base + 2 + j))


def synthesize(
    n: int, networks: int, inspect_template: dict[str, Any] | None
) -> tuple[bytes, dict[str, bytes]]:
    """(body of GET /containers/json, {"/containers/<id>/json": inspect body}) for n running
    containers on `networks` IPv6 networks."""
    entry = json.loads((FIXTURES / "seed_running.json").read_bytes())[0]
    (tmpl_net,) = entry["NetworkSettings"]["Networks"].values()
    listing: list[dict[str, Any]] = []
    inspects: dict[str, bytes] = {}
    for i in range(n):
        net, addr = address(i, networks)
        k, j = i % networks, i // networks
        cid = _sha(f"v6gen-bench-container-{i}")
        name = f"bench_svc{k:02d}_{j + 1}"
        labels = {
            **entry["Labels"],
            "com.docker.compose.project": "bench",
            "com.docker.compose.service": f"svc{k:02d}",
            "com.docker.compose.container-number": str(j + 1),
            "com.docker.compose.config-hash": _sha(f"cfg-{k}"),
        }
        gateway = str(IPv6Address(int(IPv6Address(addr)) - 1 - j))
        netinfo = {
            **copy.deepcopy(tmpl_net),
            "IPAMConfig": {"IPv6Address": addr},
            "NetworkID": _sha(f"net-{k}"),
            "EndpointID": _sha(f"ep-{i}"),
            "Gateway": f"172.{18 + k}.0.1",
            "IPAddress": f"172.{18 + k}.{j // 250}.{j % 250 + 2}",
            "IPv6Gateway": gateway,
            "GlobalIPv6Address": addr,
            "GlobalIPv6PrefixLen": 120,
            "MacAddress": f"02:42:ac:{18 + k:02x}:{j // 250:02x}:{j % 250 + 2:02x}",
        }
        c = copy.deepcopy(entry)
        c.update(Id=cid, Names=[f"/{name}"], Labels=labels)
        c["HostConfig"]["NetworkMode"] = net
        c["NetworkSettings"]["Networks"] = {net: netinfo}
        listing.append(c)
        if inspect_template is not None:
            d = copy.deepcopy(inspect_template)
            d.update(Id=cid, Name=f"/{name}")
            d["Config"]["Labels"] = labels
            d["Config"]["Hostname"] = cid[:12]
            d["HostConfig"]["NetworkMode"] = net
            d["NetworkSettings"]["Networks"] = {net: netinfo}
            inspects[f"/containers/{cid}/json"] = json.dumps(d).encode()
    return json.dumps(listing).encode(), inspects
