"""Re-capture tests/fixtures/docker/starting/: what dockerd answers about a container while it
starts it, as watch's fast path asks at each event (root only).

    python -m tests.lab.capture_starting [RELEASE ...]    # bookworm (dockerd 20.10), sid (28.5)

For every event of the filter v6gen subscribes with, at once (from the thread reading the
stream): GET /containers/json?all=1&filters={"id": [ID]} and, for network events,
GET /networks/<network ID>. Also timed: GET /containers/<ID>/json, which waits until the
container runs. Bodies are stored exactly as dockerd sent them; `timeline.json` records when
each event came, when each answer did, and when the `docker run -d` CLI returned.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from .capture_fixtures import EVENT_FILTERS
from .image import IMAGE
from .labhost import REPO, Lab, LabOptions

OUT = REPO / "tests/fixtures/docker/starting"
NET, SUBNET = "cap", "2001:db8::e:0/120"
STATIC = "2001:db8::e:10"
LABELS = {
    "com.docker.compose.project": "cap",
    "com.docker.compose.service": "web",
    "v6gen.enable": "true",
}
# Docker 27+: a network the LAN can reach at all (docker-firewall.md).
ROUTED = {"com.docker.network.bridge.gateway_mode_ipv6": "routed"}


class _Stream(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=None)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self._path))
        self.sock = sock


class Recorder:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.t0 = time.monotonic()
        self.timeline: list[dict[str, Any]] = []
        self.bodies: dict[str, bytes] = {}
        self.events: list[bytes] = []
        self.phase = ""
        self._lock = threading.Lock()
        threading.Thread(target=self._follow, daemon=True).start()

    def now(self) -> float:
        return round((time.monotonic() - self.t0) * 1000, 1)

    def note(self, **entry: Any) -> None:
        with self._lock:
            self.timeline.append({"ms": self.now(), "phase": self.phase, **entry})

    def _inspect(self, cid: str, event: str, phase: str) -> None:
        status, body = self.lab.docker.request("GET", f"/containers/{cid}/json")
        self.note(answer=f"inspect after {event}", status=status)
        if status == 200:
            with self._lock:
                self.bodies.setdefault(f"{phase}_{event}_inspect.json", body)

    def _follow(self) -> None:
        conn = _Stream(self.lab.path("/run/docker.sock"))
        query = urllib.parse.quote(json.dumps(EVENT_FILTERS))
        conn.request("GET", f"/events?filters={query}")
        resp = conn.getresponse()
        while line := resp.readline():
            event = json.loads(line)
            kind = f"{event['Type']}-{event['Action']}"
            actor = event["Actor"]
            network = event["Type"] == "network"
            cid = actor["Attributes"].get("container", "") if network else actor["ID"]
            self.note(event=kind)
            self.events.append(line)
            threading.Thread(
                target=self._inspect, args=(cid, kind, self.phase), daemon=True
            ).start()
            query = urllib.parse.quote(json.dumps({"id": [cid]}))
            listing = self.lab.docker.get(f"/containers/json?all=1&filters={query}")
            self.note(answer=f"list after {kind}")
            self.bodies.setdefault(f"{self.phase}_{kind}_list.json", listing)
            if network:
                status, body = self.lab.docker.request("GET", f"/networks/{actor['ID']}")
                self.note(answer=f"network after {kind}", status=status)
                self.bodies.setdefault(f"{self.phase}_{kind}_network.json", body)

    def run(self, phase: str, command: str) -> str:
        self.phase = phase
        self.note(command=command)
        out = self.lab.run(command).stdout.strip()
        self.note(returned=command)
        time.sleep(1.0)  # the last answers of this phase
        return out


def capture(release: str, out: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="v6gen-capture-") as tmp:
        options = LabOptions(networkd=None, dispatcher=False, release=release)  # type: ignore[arg-type]
        with Lab(Path(tmp), options) as lab:
            version = json.loads(lab.docker.get("/version"))["Version"]
            lab.docker.call("POST", "/networks/create", {
                "Name": NET, "EnableIPv6": True, "CheckDuplicate": True,
                "Options": ROUTED if release != "bookworm" else {},
                "IPAM": {"Config": [{"Subnet": SUBNET}]},
            })  # fmt: skip
            rec = Recorder(lab)
            time.sleep(0.3)
            labels = " ".join(f"--label {k}={v}" for k, v in LABELS.items())
            run = f"docker run -d --network {NET} {labels}"
            cid = rec.run("static", f"{run} --name web --ip6 {STATIC} {IMAGE} sleep infinity")
            rec.run("dynamic", f"{run} --name dyn {IMAGE} sleep infinity")
            rec.run("stop", f"docker stop -t 0 {cid}")
            rec.run("restart", f"docker start {cid}")
            rec.run("rm", f"docker rm -f {cid}")
        target = out / f"{release}-{version}"
        target.mkdir(parents=True, exist_ok=True)
        for name, body in rec.bodies.items():
            (target / name).write_bytes(body)
        (target / "events.jsonl").write_bytes(b"".join(rec.events))
        (target / "timeline.json").write_text(json.dumps(rec.timeline, indent=1) + "\n")
    return f"{release}: dockerd {version} -> {target}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("releases", nargs="*", default=["bookworm", "sid"])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    for release in args.releases:
        print(capture(release, args.out))


if __name__ == "__main__":
    main()
