"""A fault host: a private network + mount namespace in which `v6gen` runs live (no --root) with
a real kernel side, and nothing outside the namespace can be touched.

Inside: /run is a fresh tmpfs (so no system bus: D-Bus is absent unless a test starts one), /etc
and /var/lib are overlays whose changes vanish with the namespace, and every directory v6gen
writes is a fresh tmpfs of its own (so a test can remount one read-only or make it tiny). The
uplinks are veths, with the peer end in the same namespace; proxy entries, sysctls and routes are
the namespace's own. A fresh sysfs makes /sys/class/net show the namespace's links. networkd is
not running; the config names the uplinks' .network files, as on a host where it cannot be asked.

v6gen runs are forked from a zygote process (see zygote.py) that holds the namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tree import Snapshot, snapshot

REPO = Path(__file__).resolve().parents[2]
ZYGOTE = Path(__file__).resolve().parent / "zygote.py"
ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/run/dbus/system_bus_socket",
}
# Every directory v6gen may write; each is its own tmpfs inside the namespace.
WRITTEN = (
    "/etc/systemd/network",
    "/etc/systemd/networkd.conf.d",
    "/etc/sysctl.d",
    "/etc/networkd-dispatcher",
    "/var/lib/v6gen",
)
CONFIG_DIR = "/etc/v6gen"


@dataclass(frozen=True)
class Uplink:
    name: str
    prefix: str  # "2001:db8::"

    @property
    def network_file(self) -> str:
        return f"/etc/systemd/network/10-{self.name}.network"

    @property
    def network_text(self) -> str:
        return (
            f"[Match]\nName={self.name}\n\n[Network]\nAddress={self.prefix}1/64\nIPv6AcceptRA=no\n"
        )


UPLINKS = (Uplink("uplink0", "2001:db8::"), Uplink("uplink1", "2001:db8:1::"))


def _setup_script(uplinks: tuple[Uplink, ...]) -> str:
    lines = [
        "mount -t tmpfs -o mode=755 v6f-run /run",
        "mkdir -p /run/v6f/ov0/upper /run/v6f/ov0/work /run/v6f/ov1/upper /run/v6f/ov1/work",
        "mount -t overlay -o lowerdir=/etc,upperdir=/run/v6f/ov0/upper,workdir=/run/v6f/ov0/work"
        " v6f-ov /etc",
        "mount -t overlay -o lowerdir=/var/lib,upperdir=/run/v6f/ov1/upper,"
        "workdir=/run/v6f/ov1/work v6f-ov /var/lib",
    ]
    for d in (*WRITTEN, CONFIG_DIR):
        lines.append(f"mkdir -p {d} && mount -t tmpfs -o mode=755 v6f {d}")
    lines += [
        # A package-installed hook would make v6gen skip installing its own: none in here.
        "if [ -d /usr/lib/networkd-dispatcher ]; then"
        " mount -t tmpfs -o mode=755 v6f /usr/lib/networkd-dispatcher; fi",
        "mount -t sysfs -o ro sysfs /sys",
        "ip link set lo up",
        "sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0",
    ]
    for i, u in enumerate(uplinks):
        lines += [
            f"ip link add {u.name} type veth peer name lan{i}",
            f"ip link set {u.name} up && ip link set lan{i} up",
            f"ip -6 addr add {u.prefix}1/64 dev {u.name} nodad",
        ]
    lines.append(f"ip -6 route add default via {uplinks[0].prefix}100 dev {uplinks[0].name}")
    return "\n".join(lines)


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _output(path: Path) -> str:
    """A run's output file; "" when the child was killed before it opened it (the crash test's
    kills may land at once after the fork: test_crash.py aims earlier without a floor)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


class FaultHostError(RuntimeError):
    pass


class FaultHost:
    def __init__(self, workdir: Path, docker_url: str, config: str = "", uplinks: int = 1) -> None:
        self.workdir = workdir
        self.uplinks = UPLINKS[:uplinks]
        self.docker_url = docker_url
        self.extra_config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._runs = 0
        self._outputs: dict[int, Path] = {}
        self.pid = 0

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> FaultHost:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "zygote.log").open("wb")
        self._proc = subprocess.Popen(
            [
                "unshare", "--net", "--mount", "--propagation", "private", "--",
                sys.executable, str(ZYGOTE), _setup_script(self.uplinks),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**ENV, "PYTHONPATH": str(REPO / "src")},
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        log.close()
        ready = self._reply(timeout=30)
        if "ready" not in ready:
            self.stop()
            raise FaultHostError(f"fault host did not start: {ready}")
        self.pid = int(ready["ready"])
        for u in self.uplinks:
            self.write(u.network_file, u.network_text)
        self.write_config()
        return self

    def write_config(self, extra: str = "", docker_host: str = "", timeout: float = 60) -> None:
        # docker_timeout: generous, so that only the tests of it (which set their own) meet it,
        # not a sync a test keeps waiting on purpose, nor one slowed by a loaded machine.
        files = ", ".join(f"{u.name}: {u.network_file}" for u in self.uplinks)
        names = ", ".join(u.name for u in self.uplinks)
        self.write(
            f"{CONFIG_DIR}/config.yaml",
            f"uplinks: [{names}]\nnetwork_files: {{{files}}}\nsystemd_version: 252\n"
            f"docker_host: {docker_host or self.docker_url}\ndocker_timeout: {timeout:g}\n"
            f"{extra or self.extra_config}",
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write(b'{"op": "exit"}\n')
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()  # by PID: the zygote (its children die with it: PDEATHSIG)
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> FaultHost:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- the zygote's protocol --------------------------------------------------------------
    def _reply(self, timeout: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            raise FaultHostError(f"fault host silent for {timeout} s\n{self.log()}")
        line = self._proc.stdout.readline()
        if not line:
            raise FaultHostError(f"fault host died\n{self.log()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise FaultHostError(f"fault host: {reply['error']}\n{self.log()}")
        return reply

    def call(self, op: str, wait_s: float = 60, **args: Any) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        self._proc.stdin.flush()
        return self._reply(wait_s)

    def log(self) -> str:
        path = self.workdir / "zygote.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # -- running things ---------------------------------------------------------------------
    def fork(self, *argv: str, env: dict[str, str] | None = None) -> int:
        """Start `v6gen ARGV` in the namespace (live: no --root) and return its PID."""
        self._runs += 1
        base = self.workdir / f"run{self._runs}"
        reply = self.call(
            "fork",
            argv=list(argv),
            env={**ENV, **(env or {})},
            out=f"{base}.out",
            err=f"{base}.err",
        )
        pid = int(reply["pid"])
        self._outputs[pid] = base
        return pid

    def spawn(self, argv: list[str], name: str) -> int:
        """Start any program in the namespace; its output goes to <workdir>/<name>.log."""
        log = str(self.workdir / f"{name}.log")
        return int(self.call("fork", exec=argv, argv=[], env=ENV, out=log, err=log)["pid"])

    def wait(self, pid: int, timeout: float = 30) -> Run:
        reply = self.call("wait", wait_s=timeout + 10, pid=pid, timeout=timeout)
        if reply.get("running"):
            raise FaultHostError(f"v6gen run {pid} still running after {timeout} s")
        base = self._outputs.pop(pid, None)
        out, err = "", ""
        if base is not None:
            out, err = _output(Path(f"{base}.out")), _output(Path(f"{base}.err"))
        return Run(int(reply["code"]), out, err)

    def v6gen(self, *argv: str, timeout: float = 30) -> Run:
        return self.wait(self.fork(*argv), timeout)

    def kill(self, pid: int, *, group: bool = False) -> None:
        """SIGKILL a run we forked and have not waited for (so its PID cannot be reused)."""
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)

    def reap(self, timeout: float = 10) -> list[int]:
        """Wait until nothing a run started is left (orphans included); returns PIDs that
        had to be killed at the timeout."""
        return [int(p) for p in self.call("reap", wait_s=timeout + 10, timeout=timeout)["killed"]]

    def sh(self, cmd: str, check: bool = True) -> Run:
        reply = self.call("sh", wait_s=40, cmd=cmd)
        run = Run(int(reply["rc"]), reply["out"], reply["err"])
        if check and run.code != 0:
            raise FaultHostError(f"`{cmd}` failed ({run.code}): {run.err.strip()}")
        return run

    # -- looking at it ----------------------------------------------------------------------
    def path(self, inside: str) -> Path:
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def write(self, inside: str, text: str) -> None:
        p = self.path(inside)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    def read(self, inside: str) -> str:
        return self.path(inside).read_text()

    def snapshot(self) -> Snapshot:
        """Every entry of every directory v6gen writes (and of the config's)."""
        return snapshot(*(self.path(d) for d in (*WRITTEN, CONFIG_DIR)), base=self.path("/"))

    def proxy_entries(self) -> frozenset[tuple[str, str]]:
        out = self.sh("ip -6 -json neigh show proxy").out.strip()
        return frozenset((n["dev"], n["dst"]) for n in json.loads(out or "[]"))

    def sysctls(self, *keys: str) -> dict[str, str]:
        paths = " ".join(f"/proc/sys/{k}" for k in keys)
        values = self.sh(f"cat {paths}").out.split()
        return dict(zip(keys, values, strict=True))
