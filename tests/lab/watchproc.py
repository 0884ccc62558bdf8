"""`v6gen watch` as a background process inside a lab, and what the watch tests need around it:
a $NOTIFY_SOCKET, a competing lock holder, containers by Docker API, a precise wait for kernel
proxy entries, a dockerd stop/start, and debian/v6gen.service's sandbox approximated.

Built only on labhost's public API (Lab.host.prefix/spawn/procs, Lab.path, Lab.docker). The
watch process is started as `Lab.v6gen` runs the CLI (nsenter into the lab's network + mount
namespace, DOCKER_HOST and the bus address unset); its output is kept with arrival times and
copied to <logdir>/watch.log, which a failing test prints with the other logs. Everything here
is ended by its PID and dies with the test process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .image import IMAGE
from .labhost import REPO, Lab, poll
from .nsproc import LabError, kill_pid

PR_SET_PDEATHSIG = 1
INSTALLED_V6GEN = "/usr/bin/v6gen"
# The environment the service manager would hand over; never inherited from whoever runs pytest.
SD_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "DOCKER_HOST")


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class NotifySocket:
    """A unix datagram socket standing in for the service manager's $NOTIFY_SOCKET: every
    datagram is kept with the wall-clock time it arrived. Bound in a short private directory
    (sun_path holds 107 bytes) that the lab's mount namespace shares with the test: only /run,
    /sys, /etc and /var/lib are private there."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="v6gen-notify-")
        self.path = str(Path(self._dir) / "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(ln.partition("=")[::2] for ln in data.decode().splitlines() if ln)
            with self._lock:
                self.messages.append((time.time(), fields))

    def times(self, key: str, value: str | None = None) -> list[float]:
        with self._lock:
            return [t for t, f in self.messages if key in f and (value is None or f[key] == value)]

    def wait(self, key: str, value: str | None = None, timeout: float = 10, n: int = 1) -> bool:
        return poll(lambda: len(self.times(key, value)) >= n, timeout, 0.01)

    def flush(self, timeout: float = 60) -> None:
        """Until everything sent so far has been received: a datagram of our own goes through
        the same queue, behind whatever is in it."""
        marker = f"V6GEN_TEST_FLUSH={time.monotonic_ns()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(marker.encode(), self.path)
        key, _, value = marker.partition("=")
        if not self.wait(key, value, timeout):
            raise LabError(f"the notify socket did not receive its own datagram in {timeout} s")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WatchProc:
    """`v6gen watch *args` in the lab. nsenter and env exec, so `pid` is v6gen's own PID and
    signals reach it directly. Its output lines are kept with the wall-clock time they arrived
    (and copied to <logdir>/watch.log)."""

    def __init__(
        self,
        lab: Lab,
        *args: str,
        env: Mapping[str, str] | None = None,
        notify: NotifySocket | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        """With `notify`, NOTIFY_SOCKET points at it (and `wait_ready` can use READY=1); `wrap`
        goes between nsenter and v6gen (e.g. `UnitSandbox.argv()`)."""
        self.lab = lab
        self.notify = notify
        self.log = lab.logdir / "watch.log"
        self.stamped: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        env_args = [a for v in (*SD_VARS, "DBUS_SYSTEM_BUS_ADDRESS") for a in ("-u", v)]
        # As Lab.v6gen runs the CLI: this checkout's src/, or the package's /usr/bin/v6gen when
        # the lab says so (`installed`, where that version of labhost has it).
        if getattr(lab, "installed", False):
            env_args += ["-u", "PYTHONPATH", "-u", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE=1"]
            v6gen = [INSTALLED_V6GEN]
        else:
            env_args += [f"PYTHONPATH={REPO / 'src'}"]
            v6gen = [getattr(lab, "python", sys.executable), "-m", "v6gen"]
        env = {**({"NOTIFY_SOCKET": notify.path} if notify else {}), **(env or {})}
        env_args += [f"{k}={v}" for k, v in env.items()]
        argv = [*lab.host.prefix(), *wrap, "env", *env_args, *v6gen, "watch", *args]
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("a") as copy:
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                with self._lock:
                    self.stamped.append((time.time(), line))
                copy.write(f"{time.time():.3f} {line}\n")
                copy.flush()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def lines(self) -> list[str]:
        with self._lock:
            return [line for _, line in self.stamped]

    def text(self) -> str:
        return "\n".join(self.lines())

    def mark(self) -> int:
        """A position in the output, for `count`/`wait_for` to look only at what follows."""
        with self._lock:
            return len(self.stamped)

    def matching(self, pattern: str, since: int = 0) -> list[tuple[float, str]]:
        rx = re.compile(pattern)
        with self._lock:
            return [(t, line) for t, line in self.stamped[since:] if rx.search(line)]

    def count(self, pattern: str, since: int = 0) -> int:
        return len(self.matching(pattern, since))

    def wait_for(self, pattern: str, timeout: float, since: int = 0, n: int = 1) -> bool:
        """Until `pattern` has appeared n times after `since` (False on timeout or exit)."""
        poll(lambda: self.count(pattern, since) >= n or not self.alive(), timeout, 0.01)
        return self.count(pattern, since) >= n

    def wait_ready(self, timeout: float = 20) -> None:
        """Until the first sync is done (READY=1); needs `notify`."""
        assert self.notify is not None, "wait_ready needs WatchProc(..., notify=NotifySocket())"
        if not self.notify.wait("READY", "1", timeout):
            raise LabError(f"v6gen watch sent no READY=1 within {timeout}s\n{self.text()}")

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 5) -> int | None:
        """SIGTERM and wait; the exit status, or None if it had to be killed."""
        if self.alive():
            self.signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_pid(self.pid, grace=0)
            self.proc.wait(timeout=5)
            code = None
        self._reader.join(timeout=5)
        return code

    def __enter__(self) -> WatchProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


LOCK = "/run/v6gen/lock"


class LockHolder:
    """Another v6gen as far as the lock goes: `flock` on /run/v6gen/lock inside the lab, held by
    the time the constructor returns and until `release()`: no timer, so a test can first see
    what waits for it (`has_open`), however slow the machine."""

    def __init__(self, lab: Lab, lock: str = LOCK) -> None:
        hold = "echo locked; read _"  # until the test closes our stdin
        script = f"mkdir -p {Path(lock).parent} && exec flock {lock} sh -c '{hold}'"
        self.proc = subprocess.Popen(
            [*lab.host.prefix(), "sh", "-c", script],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "locked":
            raise LabError(f"flock {lock} failed")

    def release(self) -> float:
        """Release the lock; the wall-clock time just before."""
        assert self.proc.stdin is not None
        released = time.time()
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        return released


def has_open(lab: Lab, pid: int, path: str = LOCK) -> bool:
    """Whether process `pid` has the lab's `path` open. v6gen opens its lock file only to take
    the lock, so while a LockHolder holds it, a v6gen that has it open is waiting for it."""
    try:
        want = lab.path(path).stat()
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:  # no lock file yet, or the process ended
        return False
    for fd in fds:
        try:
            st = fd.stat()  # the file itself: compared by inode, whatever root pid sees it from
        except FileNotFoundError:  # closed meanwhile
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            return True
    return False


# ----- containers ------------------------------------------------------------------------------
def create_network(lab: Lab, name: str, subnet: str) -> None:
    lab.docker.call(
        "POST",
        "/networks/create",
        {
            "Name": name,
            "CheckDuplicate": True,
            "EnableIPv6": True,
            "IPAM": {"Config": [{"Subnet": subnet}]},
        },
    )


def create_container(
    lab: Lab,
    name: str,
    network: str,
    address: str | None = None,
    restart: str = "no",
) -> str:
    """A `sleep infinity` busybox container on `network`, with a static IPv6 address when
    given; created, not started. Returns its ID."""
    endpoint: dict[str, Any] = {}
    if address is not None:
        endpoint["IPAMConfig"] = {"IPv6Address": address}
    body = {
        "Image": IMAGE,
        "Cmd": ["sleep", "infinity"],
        "HostConfig": {"NetworkMode": network, "RestartPolicy": {"Name": restart}},
        "NetworkingConfig": {"EndpointsConfig": {network: endpoint}},
        # `sleep` as PID 1 ignores SIGTERM: a stop (dockerd's own shutdown included) would wait
        # the default 10 s for nothing.
        "StopTimeout": 0,
    }
    out = lab.docker.call("POST", f"/containers/create?name={name}", body)
    return str(json.loads(out)["Id"])


def start(lab: Lab, cid: str) -> None:
    lab.docker.call("POST", f"/containers/{cid}/start")


def remove(lab: Lab, cid: str) -> None:
    lab.docker.call("DELETE", f"/containers/{cid}?force=1")


def global_v6(lab: Lab, cid: str) -> list[str]:
    info = json.loads(lab.docker.get(f"/containers/{cid}/json"))
    nets = info["NetworkSettings"]["Networks"].values()
    return [n["GlobalIPv6Address"] for n in nets if n.get("GlobalIPv6Address")]


# ----- kernel proxy entries, timed inside the lab ----------------------------------------------
class EntryWaiter:
    """A loop inside the lab's namespace that polls `ip -6 neigh show proxy` every ~5 ms and
    prints CLOCK_REALTIME once `addr` is present (or absent). Started before the action it
    times, so nsenter's own start-up is not part of the measurement."""

    def __init__(
        self,
        lab: Lab,
        addr: str,
        present: bool = True,
        timeout: float = 10,
        uplink: str = "uplink0",
    ) -> None:
        rounds = int(timeout / 0.005)
        test = "" if present else "!"
        script = (
            f"i=0; while [ $i -lt {rounds} ]; do"
            f" if {test} ip -6 neigh show proxy dev {uplink} | grep -qw -- '{addr}';"
            f" then date +%s.%N; exit 0; fi; i=$((i+1)); sleep 0.005; done; exit 1"
        )
        self.proc = subprocess.Popen(
            [*lab.host.prefix(), "sh", "-c", script],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=_die_with_parent,
        )
        self.timeout = timeout

    def at(self) -> float | None:
        """The wall-clock time the condition first held, or None on timeout."""
        try:
            out, _ = self.proc.communicate(timeout=self.timeout + 10)
        except subprocess.TimeoutExpired:
            kill_pid(self.proc.pid, grace=0)
            self.proc.wait(timeout=5)
            return None
        return float(out.strip()) if self.proc.returncode == 0 and out.strip() else None


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile: the smallest value with at least q of the samples at or below."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q)) - 1]


# ----- dockerd restart -------------------------------------------------------------------------
def _dockerd(lab: Lab) -> subprocess.Popen[bytes]:
    for name, proc in lab.host.procs:
        if name == "dockerd" and proc.poll() is None:
            return proc
    raise LabError("the lab runs no dockerd")


def _state(pid: int) -> str | None:
    """The process state letter ("Z" for a zombie), None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def stop_dockerd(lab: Lab, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> list[str]:
    """Stop the lab's dockerd by its PID; returns its command line (without the nsenter prefix)
    for start_dockerd. SIGTERM is `systemctl stop docker`: dockerd stops its containers (no
    live-restore) and its containerd. SIGKILL is a crash: containers keep running in their
    shims, and the containerd it started dies with it (PR_SET_PDEATHSIG)."""
    proc = _dockerd(lab)
    prefix = lab.host.prefix()
    argv = [str(a) for a in proc.args]  # type: ignore[union-attr]
    if argv[: len(prefix)] != prefix:
        raise LabError(f"unexpected dockerd command line: {argv}")
    pidfile = lab.path("/run/docker/containerd/containerd.pid")
    try:
        containerd: int | None = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        containerd = None
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_pid(proc.pid, grace=0)
        proc.wait(timeout=5)
    lab.host.procs.remove(("dockerd", proc))
    if containerd is not None and not poll(lambda: _state(containerd) is None, 5, 0.02):
        # Orphaned, it waits as a zombie until this machine's PID 1 reaps it (measured: ~2 s,
        # sometimes longer), and a new dockerd takes a live PID in the pid file for a running
        # containerd, tries its dead socket, and gives up after 20 s. A service manager would
        # have cleaned up the unit's processes; here the stale pid file goes.
        if _state(containerd) == "Z":
            pidfile.unlink(missing_ok=True)
        else:
            raise LabError(f"dockerd's containerd (PID {containerd}) outlived it")
    if not poll(lambda: not lab.docker.ping(), 5):
        raise LabError("dockerd still answers after it was stopped")
    return argv[len(prefix) :]


def start_dockerd(lab: Lab, argv: Sequence[str], timeout: float = 30) -> None:
    lab.host.spawn("dockerd", list(argv))
    if not poll(lab.docker.ping, timeout):
        raise LabError(f"dockerd did not come back within {timeout}s\n{lab.logs()}")


# ----- the unit's sandbox, approximated without systemd ----------------------------------------
class UnitSandbox:
    """What debian/v6gen.service's file-system and capability settings do to v6gen, rebuilt with
    unshare, mount and setpriv inside the lab (systemd-run needs systemd as PID 1, and this
    machine has none): ProtectSystem=strict (every mount read-only but /dev, /proc and /sys),
    ReadWritePaths= (those that exist; "-" ones that don't are skipped, as systemd does),
    RuntimeDirectory=, StateDirectory= and ConfigurationDirectory= (created, writable),
    ProtectHome=yes, CapabilityBoundingSet= and NoNewPrivileges=. Not covered: SystemCallFilter=,
    RestrictAddressFamilies=, RestrictNamespaces=, PrivateTmp= (the test's notify socket lives
    in /tmp), PrivateDevices=, and Protect{KernelModules,KernelLogs,ControlGroups,Clock,Hostname}=.
    """

    def __init__(self, unit: Path) -> None:
        self.settings: dict[str, list[str]] = {}
        for raw in unit.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";", "[")) or "=" not in line:
                continue
            key, _, value = line.partition("=")
            self.settings.setdefault(key.strip(), []).extend(value.split())

    def get(self, key: str) -> list[str]:
        return self.settings.get(key, [])

    def script(self) -> str:
        """Shell that builds the sandbox in a new mount namespace, then execs "$@"."""
        rw = [*self.get("ReadWritePaths")]
        rw += [f"/run/{d}" for d in self.get("RuntimeDirectory")]
        rw += [f"/var/lib/{d}" for d in self.get("StateDirectory")]
        rw += [f"/etc/{d}" for d in self.get("ConfigurationDirectory")]
        lines = ["set -e"]
        lines += [f"mkdir -p /run/{d}" for d in self.get("RuntimeDirectory")]
        lines += [f"mkdir -p /var/lib/{d}" for d in self.get("StateDirectory")]
        lines += [f"mkdir -p /etc/{d}" for d in self.get("ConfigurationDirectory")]
        for p in rw:
            path = p.lstrip("-")
            bind = f"mount --bind {path} {path}"
            # "-": a missing path is skipped, not an error (systemd.exec(5)).
            lines.append(f"if [ -d {path} ]; then {bind}; fi" if p.startswith("-") else bind)
        if self.get("ProtectHome") == ["yes"]:
            # Empty and inaccessible, as systemd makes them; but not the one holding the Python
            # that runs v6gen from this checkout (e.g. a pyenv under /root; the package's is
            # /usr/bin/python3).
            python = Path(os.path.realpath(sys.executable))
            for d in ("/home", "/root", "/run/user"):
                if Path(d) not in python.parents:
                    hide = f"mount -t tmpfs -o ro,mode=000 v6gen-lab-home {d}"
                    lines.append(f"if [ -d {d} ]; then {hide}; fi")
        # Read-only: every mount but the API file systems and the writable paths just bound
        # (mounts hidden under others, like the machine's /run/* under the lab's /run, aside).
        keep = " ".join(p.lstrip("-") for p in rw)
        lines.append(
            "awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r mp; do"
            " case $mp in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac;"
            ' [ -e "$mp" ] || continue;'
            f' for w in {keep}; do [ "$mp" = "$w" ] && continue 2; done;'
            ' mount -o remount,bind,ro "$mp" 2>/dev/null || true; done'
        )
        # ... and fail, rather than test something laxer, if any of them stayed writable (the
        # top one at each mount point: later lines of mountinfo are mounted over earlier ones).
        lines.append(
            "awk '{o[$5] = $6} END {for (m in o) print m, o[m]}' /proc/self/mountinfo |"
            " while read -r mp opts; do"
            " case $mp in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac;"
            ' [ -e "$mp" ] || continue;'
            f' for w in {keep}; do [ "$mp" = "$w" ] && continue 2; done;'
            ' case $opts in ro|ro,*) ;; *) echo "sandbox: $mp stayed writable" >&2; exit 1 ;;'
            " esac; done"
        )
        caps = [c.lower().removeprefix("cap_") for c in self.get("CapabilityBoundingSet")]
        setpriv = ["setpriv", "--bounding-set", ",".join(["-all", *(f"+{c}" for c in caps)])]
        setpriv += ["--inh-caps", "-all"]
        if self.get("NoNewPrivileges") == ["yes"]:
            setpriv.append("--no-new-privs")
        lines.append(f'exec {" ".join(setpriv)} -- "$@"')
        return "\n".join(lines)

    def argv(self) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", self.script(), "sh"]
