"""Lab helpers shared by the lab-based measurements."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.lab.labhost import Lab, LabOptions

from . import CACHE, REPO
from .common import log, nsenter, timed_run

SEED = REPO / "tests/lab/compose/seed.yml"
PROBE = "2001:db8::a:71a5"
HOOK_STATES = ("carrier", "degraded", "routable", "configured")


def start_lab(workdir: Path, **options: Any) -> Lab:
    lab = Lab(workdir, LabOptions(**options))
    lab.start()
    log(f"lab {options or 'default'} up in {lab.bringup_seconds:.2f} s")
    return lab


def py_env(*unset: str) -> list[str]:
    """`env` arguments for a Python run in the lab as Lab.v6gen does it (no DOCKER_HOST or bus
    address from our environment), with bytecode as an installed v6gen has it: cached under
    bench/.cache/pycache (src/ stays untouched), even where PYTHONDONTWRITEBYTECODE is set."""
    names = ("DOCKER_HOST", "DBUS_SYSTEM_BUS_ADDRESS", "PYTHONDONTWRITEBYTECODE", *unset)
    prefix = f"PYTHONPYCACHEPREFIX={CACHE / 'pycache'}"
    return ["env", *(a for n in names for a in ("-u", n)), prefix]


def v6gen_argv(lab: Lab, *args: str, python: str = sys.executable) -> list[str]:
    """What Lab.v6gen runs, for timed_run."""
    return [
        *lab.host.prefix(), *py_env(), f"PYTHONPATH={REPO / 'src'}", python, "-m", "v6gen", *args,
    ]  # fmt: skip


def sync_json(
    lab: Lab, *args: str, timeout: float = 120, python: str = sys.executable
) -> tuple[dict[str, Any], float]:
    """`v6gen sync --json` in the lab: (report, wall seconds of the whole process)."""
    argv = v6gen_argv(lab, "sync", "--json", *args, python=python)
    res, took = timed_run(argv, bound=timeout, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"v6gen sync exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr}")
    return json.loads(res.stdout), took


def hooks_installed(lab: Lab) -> list[str]:
    base = lab.path("/etc/networkd-dispatcher")
    return sorted(str(p.relative_to(lab.path("/"))) for p in base.glob("*.d/50-v6gen"))


def install_hooks_by_hand(lab: Lab) -> None:
    """What `v6gen sync` should do (issue 4) and does not yet: the hook in every state dir,
    script and directory 0755 root:root."""
    from v6gen.hooks import hook_source

    for state in HOOK_STATES:
        d = lab.path(f"/etc/networkd-dispatcher/{state}.d")
        d.mkdir(mode=0o755, exist_ok=True)
        d.chmod(0o755)
        target = d / "50-v6gen"
        shutil.copyfile(hook_source(), target)
        target.chmod(0o755)


def ip(lab: Lab, *args: str) -> None:
    subprocess.run([*nsenter(lab.host.pid, mount=False), "ip", *args], check=True, timeout=10)


def wait_quiet(path: Path, quiet: float, timeout: float) -> None:
    """Until `path` (a daemon log) has not grown for `quiet` seconds, at most `timeout`."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = path.stat().st_size if path.exists() else 0
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.02)
