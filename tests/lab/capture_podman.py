"""Capture tests/fixtures/podman/<suite>-<version>/ from a release's real Podman (root only).

    python -m tests.lab.capture_podman [SUITE ...]   (bookworm, trixie, sid, sid-podman6)

What v6gen reads through Podman's Docker-compatible API, stored exactly as Podman sent it:
/version (whose Components say "Podman Engine"), /networks and /containers/json with the seed
container running on an IPv6 network inside the uplink's prefix, the list entry of a container
created and initialized but not started, and the /events a container's start and removal
produce (unfiltered: which names and filters each release knows is the point).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Literal

from . import podman
from .image import IMAGE
from .labhost import REPO, Lab, LabOptions

NETWORK, SUBNET, ADDRESS = "probe-network", "2001:db8::a:71a0/125", "2001:db8::a:71a5"
WAITING = "2001:db8::a:71a6"
Suite = Literal["bookworm", "trixie", "sid"]
Engine = Literal["podman", "podman6"]
# Name on the command line -> (release, engine); sid-podman6: Podman 6 from experimental.
SUITES: dict[str, tuple[Suite, Engine]] = {
    "bookworm": ("bookworm", "podman"),
    "trixie": ("trixie", "podman"),
    "sid": ("sid", "podman"),
    "sid-podman6": ("sid", "podman6"),
}


def capture(suite: Suite, out_root: Path, engine: Engine = "podman") -> Path:
    files: dict[str, bytes] = {}
    options = LabOptions(networkd=None, dispatcher=False, release=suite, engine=engine)
    with (
        tempfile.TemporaryDirectory(prefix="v6gen-capture-") as tmp,
        Lab(Path(tmp), options) as lab,
    ):
        api = lab.docker
        files["version.json"] = api.get("/version")
        podman.create_network(lab, NETWORK, SUBNET)
        # Created and initialized, not started: what watch's fast path asks after `init`.
        argv = ["podman", "create", "--name", "waiting", "--network", NETWORK, "--ip6", WAITING]
        argv += ["--cgroup-parent", f"/{lab.cgroup_parent}", IMAGE, "sleep", "infinity"]
        cid = lab.run(argv).stdout.strip()
        lab.run(["podman", "init", cid])
        query = urllib.parse.urlencode({"all": "1", "filters": json.dumps({"id": [cid]})})
        files["initialized.json"] = api.get(f"/containers/json?{query}")
        podman.remove_container(lab, "waiting")
        since = str(int(time.time()) - 1)  # Podman reads whole seconds only
        podman.run_container(lab, "probe", NETWORK, ADDRESS)
        files["containers.json"] = api.get("/containers/json")
        files["networks.json"] = api.get("/networks")
        podman.remove_container(lab, "probe")
        until = str(int(time.time()) + 1)
        events = urllib.parse.urlencode({"since": since, "until": until})
        files["events.jsonl"] = api.get(f"/events?{events}")
    version = json.loads(files["version.json"])["Version"]
    out = out_root / f"{suite}-{version}"
    out.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (out / name).write_bytes(body)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("suites", nargs="*", default=list(SUITES), help=", ".join(SUITES))
    ap.add_argument("--out", type=Path, default=REPO / "tests/fixtures/podman")
    args = ap.parse_args()
    if unknown := set(args.suites) - set(SUITES):
        ap.error(f"unknown suites: {', '.join(sorted(unknown))}")
    for suite in args.suites:
        release, engine = SUITES[suite]
        print(f"{suite}: captured into {capture(release, args.out, engine)}")


if __name__ == "__main__":
    main()
