"""help_startup_ratio: `v6gen --help` wall time over bare `python -c pass`, same interpreter
(the project's venv) and PYTHONPATH=src, median of 25 each, interleaved, after 3 warm-up runs.

Bytecode: an installed v6gen (wheel, Debian package) has its .pyc files. This checkout's src/
has none and the environment may set PYTHONDONTWRITEBYTECODE, so the headline runs with
PYTHONPYCACHEPREFIX=bench/.cache/pycache (written during warm-up, nothing written into src/);
the same ratio without any cached bytecode for src/ is reported as an extra row.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

from . import CACHE, REPO
from .common import Section, log, median, rnd, summary, timed_run

ROUNDS = 25
WARMUP = 3


def _time(argv: list[str], env: dict[str, str], cpu: list[float] | None = None) -> float:
    """Wall ms; with `cpu`, also append the child's user+system CPU ms (robust against other
    load on the machine, which wall time is not)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = timed_run(argv, bound=30, env=env)[1] * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        cpu.append(used * 1000)
    return wall


def _env(pyc: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(REPO / "src")
    if pyc:
        env["PYTHONPYCACHEPREFIX"] = str(CACHE / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _import_top(env: dict[str, str], argv: list[str], n: int = 6) -> list[str]:
    """The biggest cumulative imports of one run (-X importtime)."""
    res = subprocess.run([sys.executable, "-X", "importtime", *argv[1:]], env=env,
                         capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    rows = []
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(3)) <= 2:  # top-level imports only
            rows.append((int(m.group(2)), m.group(4)))
    rows.sort(reverse=True)
    return [f"{name} {us / 1000:.1f} ms" for us, name in rows[:n]]


DEBIAN_PY = "/usr/bin/python3"


def debian_typer_version() -> str | None:
    res = subprocess.run(
        [DEBIAN_PY, "-c", "import typer, click; print(typer.__version__, click.__version__)"],
        capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return res.stdout.strip() or None


def _debian_python(env: dict[str, str]) -> dict[str, list[float]] | None:
    """The same ratio under Debian's /usr/bin/python3 with Debian's typer/click (what the .deb
    runs), when those packages are installed; src/ on PYTHONPATH, bytecode as above."""
    if not Path(DEBIAN_PY).exists() or debian_typer_version() is None:
        return None
    cmds = {"pass": [DEBIAN_PY, "-c", "pass"], "help": [DEBIAN_PY, "-m", "v6gen", "--help"]}
    out: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(WARMUP):
        for argv in cmds.values():
            _time(argv, env)
    for _ in range(15):
        for k, argv in cmds.items():
            out[k].append(_time(argv, env))
    return out


def _describe(exe: str) -> str:
    """What `python3` on PATH is: on this machine a pyenv shim, a bash script that execs the
    interpreter after `pyenv exec` has chosen it, which is where a ~90 ms "python3 -c pass"
    comes from."""
    head = Path(exe).read_bytes()[:64]
    first = head.splitlines()[0].decode(errors="replace") if head else ""
    kind = f"script {first}" if first.startswith("#!") else "binary"
    return f"{exe} ({kind})"


def run(workdir: Path) -> Section:
    sec = Section()
    py = sys.executable
    script = Path(py).parent / "v6gen"
    help_argv = [str(script), "--help"] if script.exists() else [py, "-m", "v6gen", "--help"]
    cmds = {
        "pass": [py, "-c", "pass"],
        "help": help_argv,
        "help_m": [py, "-m", "v6gen", "--help"],
        # Floors: what importing the CLI library alone costs, typer against the standard
        # library's argparse, so the ratio's cause is measured, not guessed.
        "typer": [py, "-c", "import typer"],
        "argparse": [py, "-c", "import argparse"],
    }
    path_python3 = shutil.which("python3")
    if path_python3:
        cmds["path_python3"] = [path_python3, "-c", "pass"]
    times: dict[str, list[float]] = {k: [] for k in cmds}
    cpu: dict[str, list[float]] = {k: [] for k in cmds}
    env = _env(pyc=True)
    for _ in range(WARMUP):
        for argv in cmds.values():
            _time(argv, env)
    for _ in range(ROUNDS):
        for k, argv in cmds.items():
            times[k].append(_time(argv, env, cpu[k]))
    nopyc = {"pass": [], "help": []}  # type: dict[str, list[float]]
    env2 = _env(pyc=False)
    for _ in range(10):
        for k in nopyc:
            nopyc[k].append(_time(cmds[k], env2))
    top = _import_top(env, [py, "-m", "v6gen", "--help"])
    debian = _debian_python(env)

    p, h, hm = median(times["pass"]), median(times["help"]), median(times["help_m"])
    sec.metrics.update(
        help_startup_ratio=rnd(h / p, 2),
        help_startup_ms=rnd(h, 1),
        python_pass_ms=rnd(p, 1),
        help_startup_ratio_min=rnd(min(times["help"]) / min(times["pass"]), 2),
        help_startup_cpu_ratio=rnd(median(cpu["help"]) / median(cpu["pass"]), 2),
        help_startup_ratio_python_m=rnd(hm / p, 2),
        help_startup_ratio_no_src_pyc=rnd(median(nopyc["help"]) / median(nopyc["pass"]), 2),
    )
    sec.metrics.update(
        typer_import_ratio=rnd(median(times["typer"]) / p, 2),
        argparse_import_ratio=rnd(median(times["argparse"]) / p, 2),
    )
    if "path_python3" in times:
        sec.metrics["path_python3_pass_ms"] = rnd(median(times["path_python3"]), 1)
        sec.detail["path_python3"] = _describe(cmds["path_python3"][0])
    if debian:
        sec.metrics["help_startup_ratio_debian_python"] = rnd(
            median(debian["help"]) / median(debian["pass"]), 2
        )
        sec.detail["debian_python_help_ms"] = summary(debian["help"], 1)
        sec.detail["debian_python_pass_ms"] = summary(debian["pass"], 1)
        sec.detail["debian_python_typer"] = debian_typer_version()
    sec.detail.update(
        help_startup_ms=summary(times["help"], 1),
        help_startup_python_m_ms=summary(times["help_m"], 1),
        python_pass_ms=summary(times["pass"], 1),
        help_startup_cpu_ms=summary(cpu["help"], 1),
        python_pass_cpu_ms=summary(cpu["pass"], 1),
        help_startup_no_src_pyc_ms=summary(nopyc["help"], 1),
        python_pass_no_src_pyc_ms=summary(nopyc["pass"], 1),
        help_command=" ".join(Path(a).name if a.startswith("/") else a for a in help_argv),
        help_top_imports=top,
    )
    log(f"--help {h:.1f} ms vs python -c pass {p:.1f} ms: ratio {h / p:.2f}")
    sec.notes.append(
        f"startup: `v6gen --help` (venv console script) vs `python -c pass`, same venv "
        f"interpreter, PYTHONPATH=src, median of {ROUNDS} interleaved, bytecode cached outside "
        "src/; top imports of --help: " + ", ".join(top[:3])
    )
    return sec
