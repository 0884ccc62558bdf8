"""watch_memory_*: issue 22, `v6gen watch`'s resident memory once ready and after 1,000 events,
under the venv (current PyPI libraries) and under Debian's /usr/bin/python3 with Debian 12's
libraries, this checkout and the baseline (the commit before issue 22) side by side in one lab;
and where the memory goes, import by import.

Lab: networkd 252, dockerd 20.10 (tests/lab). Per variant: watch started with one container
running, VmRSS once it has been quiet for 1 s; then `docker network connect`/`disconnect` of
that container to a second IPv6 network, 500 pairs (1,000 events, each taken by the fast path
and a sync), VmRSS once quiet for 2 s. Debian's python3 runs as v6gen.service runs it:
SETUPTOOLS_USE_DISTUTILS=stdlib (the unit's Environment=); once more without it, to show what
it saves. Where it goes: a fresh interpreter imports what watch imports, in watch's order, and
VmRSS is read after each step (`detail.watch_memory_imports`; shared libraries count where
they are first loaded, e.g. libcrypto with the docker SDK's ssl).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

from tests.lab.image import IMAGE
from tests.lab.labhost import Lab
from tests.lab.watchproc import WatchProc

from . import REPO
from .common import Section, log, rnd
from .first_network import baseline_src
from .labutil import start_lab, wait_quiet

EVENTS = 1000
DEBIAN = "/usr/bin/python3"
UNIT_ENV = {"SETUPTOOLS_USE_DISTUTILS": "stdlib"}  # debian/v6gen.service's Environment=
NET, SUBNET = "mem", "2001:db8::d:0/112"
NET2, SUBNET2 = "mem2", "2001:db8::c:0/120"
IMPORTS = r"""
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
steps = [
    ("interpreter", []), ("typer, click (the CLI)", ["typer", "v6gen.cli"]),
    ("v6gen's core (watch, engine, plan, apply, ...)", ["v6gen.watch", "v6gen.engine"]),
    ("PyYAML (config)", ["yaml"]), ("docker SDK (requests, urllib3, ssl)", ["docker"]),
    ("dbus-next (asyncio)", ["dbus_next.aio"]), ("jinja2 (templates)", ["jinja2"]),
    ("v6gen's adapters", ["v6gen.adapters.docker", "v6gen.adapters.networkd",
                          "v6gen.adapters.firewalls", "v6gen.adapters.kernel",
                          "v6gen.adapters.rulemonitor", "v6gen.instant", "v6gen.report"]),
]
out, before = [], 0  # the first step: the interpreter itself
for name, modules in steps:
    for module in modules:
        importlib.import_module(module)
    now = rss()
    out.append([name, now - before, len(sys.modules)])
    before = now
print(json.dumps(out))
"""


class _With:
    """The lab as WatchProc sees it, with another interpreter for v6gen."""

    def __init__(self, lab: Any, python: str) -> None:
        self._lab, self.python = lab, python

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lab, name)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _measure(lab: Any, cid: str, python: str, env: dict[str, str]) -> tuple[float, float]:
    watch = WatchProc(cast(Lab, _With(lab, python)), env=env)
    try:
        wait_quiet(watch.log, quiet=1.0, timeout=60)
        started = _rss_mib(watch.pid)
        for _ in range(EVENTS // 2):
            lab.docker.call("POST", f"/networks/{NET2}/connect", {"Container": cid})
            lab.docker.call("POST", f"/networks/{NET2}/disconnect", {"Container": cid})
        wait_quiet(watch.log, quiet=2.0, timeout=120)
        return started, _rss_mib(watch.pid)
    finally:
        watch.stop()


def _imports(python: str, src: Path, env: dict[str, str]) -> list[list[Any]]:
    done = subprocess.run(
        [python, "-c", IMPORTS],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src), **env},
    )
    return [[name, rnd(kib / 1024, 1), n] for name, kib, n in json.loads(done.stdout)]


def run(workdir: Path) -> Section:
    sec = Section()
    base = baseline_src()
    variants = {
        "venv": (sys.executable, {}),
        "debian": (DEBIAN, UNIT_ENV),
        "debian_without_unit_env": (DEBIAN, {}),
        "baseline_venv": (sys.executable, {"PYTHONPATH": str(base)}),
        "baseline_debian": (DEBIAN, {"PYTHONPATH": str(base)}),
    }
    lab = start_lab(workdir / "watch-memory")
    try:
        for name, subnet in ((NET, SUBNET), (NET2, SUBNET2)):
            body = {"Name": name, "EnableIPv6": True, "IPAM": {"Config": [{"Subnet": subnet}]}}
            lab.docker.call("POST", "/networks/create", body)
        argv = ["env", "-u", "DOCKER_HOST", "docker", "run", "-d", "--network", NET]
        cid = lab.run([*argv, "--ip6", "2001:db8::d:10", IMAGE, "sleep", "infinity"]).stdout
        for name, (python, env) in variants.items():
            started, after = _measure(lab, cid.strip(), python, env)
            sec.metrics[f"watch_memory_{name}_start_mib"] = rnd(started, 1)
            sec.metrics[f"watch_memory_{name}_after_{EVENTS}_events_mib"] = rnd(after, 1)
            log(f"watch_memory {name}: {started:.1f} MiB ready, {after:.1f} after {EVENTS}")
            time.sleep(0.5)
    finally:
        lab.stop()
    src = REPO / "src"
    sec.detail["watch_memory_imports"] = {
        "venv": _imports(sys.executable, src, {}),
        "debian": _imports(DEBIAN, src, UNIT_ENV),
        "debian_without_unit_env": _imports(DEBIAN, src, {}),
    }
    sec.notes.append(
        f"watch_memory: VmRSS of `v6gen watch` once ready and after {EVENTS} events of "
        "network connect/disconnect churn, dockerd 20.10; debian = /usr/bin/python3 with "
        "Debian 12's libraries and v6gen.service's SETUPTOOLS_USE_DISTUTILS=stdlib"
    )
    return sec
