"""The process that holds a fault host's namespaces and forks `v6gen` runs inside them.

Started by faultns.FaultHost as `unshare --net --mount --propagation private -- python zygote.py
SETUP`: it runs the SETUP shell script (mounts, the uplink veth), imports v6gen and its
libraries once, then answers one JSON request per stdin line with one JSON reply per stdout line.

Why a fork server: a `python -m v6gen sync` spends ~0.3 s importing before it touches anything.
A child forked from here runs exactly `v6gen.cli.main()` with its own argv, environment, stdout
and stderr, as `python -m v6gen` would, but starts in a millisecond, so that a kill -9 at a random
moment lands in the sync's real work, and 100 of them fit in seconds. It is a separate process in
its own process group: SIGKILL to it (or to the group, which includes the `ip` it started) is a
real kill -9. As a child subreaper this process inherits whatever a killed sync left running and
reaps it, so a test can wait until nothing of a killed sync is left.

Requests (each a JSON object with "op"):
  fork {argv, env, out, err}   a v6gen run; or with "exec": [argv] any program -> {pid}
  wait {pid, timeout}          -> {code} (negative: killed by that signal) or {running: true}
  reap {timeout}               wait for every child (also inherited orphans); SIGKILL any still
                               there at the timeout -> {killed: [pids]}
  sh {cmd, timeout}            -> {rc, out, err}
  exit                         SIGKILL every child, reap, exit
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def _children() -> list[int]:
    found: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _status_code(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _fork(req: dict[str, Any]) -> dict[str, Any]:
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 99
        try:
            os.setpgid(0, 0)
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            for fd, name in ((1, req["out"]), (2, req["err"])):
                f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            sys.stdin = Path(os.devnull).open()  # noqa: SIM115 - lives as long as the child
            os.environ.clear()
            os.environ.update(req["env"])
            if "exec" in req:
                os.execvp(req["exec"][0], req["exec"])  # noqa: S606 - argv from the test
            sys.argv = ["v6gen", *req["argv"]]
            from v6gen.cli import main

            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # also here: the caller may signal the group at once
    return {"pid": pid}


def _wait(req: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + float(req.get("timeout", 30))
    while True:
        try:
            done, status = os.waitpid(int(req["pid"]), os.WNOHANG)
        except ChildProcessError:
            return {"error": f"{req['pid']} is not a child (reaped already?)"}
        if done:
            return {"code": _status_code(status)}
        if time.monotonic() > deadline:
            return {"running": True}
        time.sleep(0.002)


def _reap(req: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + float(req.get("timeout", 10))
    killed: list[int] = []
    while True:
        try:
            done, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return {"killed": killed}
        if done:
            continue
        if time.monotonic() > deadline:
            for pid in _children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            deadline = time.monotonic() + 5
        time.sleep(0.002)


def _sh(req: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["sh", "-c", req["cmd"]],
        capture_output=True,
        text=True,
        timeout=float(req.get("timeout", 30)),
        check=False,
    )
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr}


def main() -> None:
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    setup = subprocess.run(["sh", "-ec", sys.argv[1]], capture_output=True, text=True, check=False)
    if setup.returncode != 0:
        print(json.dumps({"error": f"setup failed: {setup.stderr.strip()}"}), flush=True)
        return
    # What a v6gen run imports, once, so that forked runs start at once.
    import dbus_next.aio.message_bus  # noqa: F401
    import docker  # noqa: F401
    import jinja2  # noqa: F401
    import yaml  # noqa: F401

    with contextlib.suppress(ImportError):  # recent typer imports pydantic on first parse
        import typer._adapters  # noqa: F401

    import v6gen.adapters.docker
    import v6gen.adapters.kernel
    import v6gen.adapters.networkd
    import v6gen.cli
    import v6gen.engine  # noqa: F401

    print(json.dumps({"ready": os.getpid()}), flush=True)
    ops = {"fork": _fork, "wait": _wait, "reap": _reap, "sh": _sh}
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "exit":
            break
        try:
            reply = ops[req["op"]](req)
        except Exception as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)
    for pid in _children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap({"timeout": 5})


if __name__ == "__main__":
    main()
