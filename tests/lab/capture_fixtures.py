"""Re-capture tests/fixtures/docker/ from a real dockerd in the lab (root only).

    python -m tests.lab.capture_fixtures [--out DIR]

Bodies are stored exactly as dockerd sent them, so discovery tests parse what the SDK parses.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.parse
from pathlib import Path

from .labhost import REPO, Lab, LabOptions

COMPOSE = Path(__file__).resolve().parent / "compose"
# What v6gen subscribes to (networkd-facts.md): container life cycle and network attachment.
EVENT_FILTERS = {
    "type": ["container", "network"],
    "event": ["create", "start", "die", "destroy", "connect", "disconnect"],
}


def _wait_exited(lab: Lab, service: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in lab.docker.get_json("/containers/json?all=1"):
            labels = c.get("Labels") or {}
            if labels.get("com.docker.compose.service") == service and c["State"] == "exited":
                return
        time.sleep(0.1)
    raise RuntimeError(f"container of service {service} did not exit")


def _capture_events(lab: Lab) -> bytes:
    api = lab.docker
    # Sub-second `since` keeps the earlier captures' events out of this one.
    since = f"{time.time():.9f}"
    lab.compose_up(COMPOSE / "events.yml", project="ev")
    extra = json.loads(api.call("POST", "/networks/create", {
        "Name": "ev_extra", "EnableIPv6": True, "CheckDuplicate": True,
        "IPAM": {"Config": [{"Subnet": "2001:db8::e:0/125"}]},
    }))["Id"]  # fmt: skip
    (ctr,) = api.get_json("/containers/json")
    api.call("POST", f"/networks/{extra}/connect", {"Container": ctr["Id"]})
    api.call("POST", f"/networks/{extra}/disconnect", {"Container": ctr["Id"]})
    lab.compose_down(COMPOSE / "events.yml", project="ev")
    api.call("DELETE", f"/networks/{extra}")
    # With `until` in the past dockerd replays the log and closes the stream instead of waiting.
    time.sleep(0.05)
    until = f"{time.time():.9f}"
    time.sleep(0.05)
    query = urllib.parse.urlencode({
        "since": since, "until": until, "filters": json.dumps(EVENT_FILTERS),
    })  # fmt: skip
    return api.get(f"/events?{query}")


def capture(out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    with (
        tempfile.TemporaryDirectory(prefix="v6gen-capture-") as tmp,
        Lab(Path(tmp), LabOptions(networkd=None, dispatcher=False)) as lab,
    ):
        api = lab.docker
        files["version.json"] = api.get("/version")
        files["empty.json"] = api.get("/containers/json?all=1")

        lab.compose_up(COMPOSE / "seed.yml", project="seed")
        files["seed_running.json"] = api.get("/containers/json")
        lab.compose_down(COMPOSE / "seed.yml", project="seed")

        lab.compose_up(COMPOSE / "mixed.yml", project="mixed")
        _wait_exited(lab, "stopped")
        files["mixed_running.json"] = api.get("/containers/json")
        files["mixed_all.json"] = api.get("/containers/json?all=1")
        lab.compose_down(COMPOSE / "mixed.yml", project="mixed")

        files["events.jsonl"] = _capture_events(lab)
        version = json.loads(files["version.json"])
    for name, body in files.items():
        (out / name).write_bytes(body)
    return {"Version": version["Version"], "ApiVersion": version["ApiVersion"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "tests/fixtures/docker")
    args = ap.parse_args()
    info = capture(args.out)
    print(f"captured from dockerd {info['Version']} (API {info['ApiVersion']}) into {args.out}")


if __name__ == "__main__":
    main()
