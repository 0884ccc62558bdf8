"""`v6gen sync`, except that Docker is asked the docker SDK's default way:
`DockerClient.containers.list()` = GET /containers/json plus one GET /containers/<id>/json
(inspect) per container. Everything else is v6gen's own pipeline (engine.sync with the real
networkd and kernel adapters, under the sync lock), so the difference is the listing alone.

Run inside the lab: `python -m bench.sdk_default` (PYTHONPATH=src:<repo>). Prints one JSON
object: {"list_s": seconds spent listing, "report": the same report as `v6gen sync --json`}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from v6gen.model import DockerFacts

if TYPE_CHECKING:  # imported when called: older v6gen this baseline runs against lacks it
    from v6gen.detect import EngineChoice


class SdkDefaultDocker:
    def __init__(self, host: str | None, timeout: float) -> None:
        self._host = host
        self._timeout = timeout
        self.list_s = 0.0

    def endpoints(self) -> list[Any]:
        import docker

        from v6gen.discover import endpoints_from_list

        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"version": "auto", "timeout": int(self._timeout)}
        client = docker.DockerClient(base_url=self._host, **kwargs)
        listing = []
        for c in client.containers.list():  # the SDK's default: sparse=False, inspect each
            attrs = c.attrs
            listing.append({
                "Id": attrs.get("Id"),
                "Names": [attrs.get("Name", "")],
                "State": (attrs.get("State") or {}).get("Status", "running"),
                "Labels": (attrs.get("Config") or {}).get("Labels") or {},
                "NetworkSettings": {
                    "Networks": (attrs.get("NetworkSettings") or {}).get("Networks") or {}
                },
            })  # fmt: skip
        client.close()
        self.list_s = time.perf_counter() - t0
        return endpoints_from_list(listing)

    def facts(self) -> DockerFacts:
        # The baseline is about listing containers; networks cost v6gen one call either way.
        return DockerFacts()

    def choice(self) -> EngineChoice:
        from v6gen.detect import EngineChoice

        return EngineChoice(self._host, "Docker", "the docker SDK's defaults")


def main() -> int:
    from v6gen import config as config_mod
    from v6gen import engine, lock
    from v6gen.adapters.kernel import IpKernel
    from v6gen.adapters.networkd import DBusNetworkd
    from v6gen.paths import Paths

    paths = Paths(Path("/"))
    cfg = config_mod.load(paths.config, explicit=False)
    docker = SdkDefaultDocker(cfg.docker_host, cfg.docker_timeout)
    with DBusNetworkd(paths) as networkd:
        ctx = engine.Context(cfg, paths, engine.Adapters(docker, networkd, IpKernel()), True)
        with lock.held(paths.lock_file):
            outcome = engine.sync(ctx)
    try:
        from v6gen.report import to_json

        report = to_json(outcome, paths)
    except ImportError:  # before report.py existed, Outcome had the method
        report = outcome.to_json(paths)  # type: ignore[attr-defined]
    print(json.dumps({"list_s": docker.list_s, "report": report}, default=str))
    return int(outcome.exit_code)


if __name__ == "__main__":
    sys.exit(main())
