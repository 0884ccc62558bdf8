"""One private network + mount namespace and every process the lab starts in or around it.

Teardown never relies on process names: each process is remembered by PID when started, and a
final sweep kills whatever still lives in the lab's namespaces or cgroup (children that daemons
forked, e.g. containerd and its shims), again by PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
Command = str | Sequence[str]


class LabError(RuntimeError):
    """The lab itself failed (not the code under test)."""


def _die_with_parent() -> None:
    # If pytest is killed hard, the namespace holders die with it instead of lingering.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def argv_of(cmd: Command) -> list[str]:
    return ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)


def run_checked(
    label: str,
    argv: list[str],
    cmd: Command,
    *,
    check: bool,
    timeout: float,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`argv` (which runs `cmd` somewhere), its output kept; a timeout, or a failure when
    `check`, is a LabError that names `label` and shows both streams."""
    try:
        res = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=env, input=input,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"[{label}] timed out after {timeout}s: {cmd}") from exc
    if check and res.returncode != 0:
        raise LabError(
            f"[{label}] exit {res.returncode}: {cmd}\n"
            f"stdout: {res.stdout.strip()}\nstderr: {res.stderr.strip()}"
        )
    return res


def ns_inode(pid: int, kind: str) -> str | None:
    try:
        return str(Path(f"/proc/{pid}/ns/{kind}").readlink())
    except OSError:
        return None


def kill_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; reaps it if it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


class Namespace:
    """A namespace kept alive by a `sleep` holder; commands join it with nsenter.

    With a `parent`, only the network is new (a LAN neighbour): it shares the parent's mount
    namespace and so its private /run.
    """

    def __init__(self, logdir: Path, name: str, parent: Namespace | None = None) -> None:
        self.logdir = logdir
        self.name = name
        self.parent = parent
        self.holder: subprocess.Popen[bytes] | None = None
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    @property
    def pid(self) -> int:
        if self.holder is None:
            raise LabError(f"namespace {self.name} not started")
        return self.holder.pid

    def start(self) -> None:
        if self.parent is None:
            # No --fork: unshare execs sleep itself, so the PID we hold is inside the namespace.
            argv = ["unshare", "--net", "--mount", "--propagation", "private"]
        else:
            argv = [*self.parent.lan_prefix(), "unshare", "--net"]
        self.holder = subprocess.Popen(
            [*argv, "--", "sleep", "infinity"],
            preexec_fn=_die_with_parent,
            stdin=subprocess.DEVNULL,
        )
        mine = ns_inode(os.getpid(), "net")
        deadline = time.monotonic() + 5
        while ns_inode(self.pid, "net") in (mine, None):
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"namespace {self.name}: unshare failed")
            time.sleep(0.005)
        if self.parent is not None:
            # The holder is a child of nsenter; wait until it has exec'd into the new netns.
            while ns_inode(self.pid, "net") == ns_inode(self.parent.pid, "net"):
                time.sleep(0.005)

    def prefix(self) -> list[str]:
        # A LAN holder shares its parent's mount namespace, so -m works for both kinds.
        return ["nsenter", "-t", str(self.pid), "-n", "-m", "--"]

    def lan_prefix(self) -> list[str]:
        """Where a LAN neighbour namespace of this one is made (see release.py for another)."""
        return self.prefix()

    def run(
        self,
        cmd: Command,
        *,
        check: bool = True,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [*self.prefix(), *argv_of(cmd)]
        full_env = {**os.environ, **env} if env else None
        return run_checked(self.name, argv, cmd, check=check, timeout=timeout, env=full_env,
                           input=input)  # fmt: skip

    def spawn(
        self, name: str, cmd: Command, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A daemon in the namespace, its output in <logdir>/<name>.log."""
        log = (self.logdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [*self.prefix(), *argv_of(cmd)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def pid_inside(self, pid: int) -> int:
        """The process spawn() started (`pid`), as numbered where it runs: the same here, where
        nsenter execs it in place."""
        return pid

    def stop_proc(self, name: str, grace: float = 5.0) -> None:
        for pname, proc in list(self.procs):
            if pname == name:
                kill_pid(proc.pid, grace)
                self.procs.remove((pname, proc))

    def members(self) -> list[int]:
        """PIDs other than the holder that live in this namespace."""
        if self.holder is None:
            return []
        wanted = {ns_inode(self.pid, "net")}
        if self.parent is None:
            wanted.add(ns_inode(self.pid, "mnt"))
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in (self.pid, os.getpid()):
                continue
            pid = int(entry.name)
            if ns_inode(pid, "net") in wanted or ns_inode(pid, "mnt") in wanted:
                found.append(pid)
        return found

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            kill_pid(proc.pid)
        self.procs.clear()
        for _ in range(3):
            pids = self.members()
            if not pids:
                break
            for pid in pids:
                kill_pid(pid, grace=0.5)
        if self.holder is not None:
            kill_pid(self.holder.pid, grace=0.5)
            self.holder = None
