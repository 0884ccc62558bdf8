"""Run the real dispatcher hook, as root, in a private network namespace.

The hook has no configuration at all (fixed PATH and fixed paths, by design), so each run goes
through `ip netns exec`, which also gives it a private mount namespace, and there the test's
directories are bind-mounted over /var/lib, /etc/sysctl.d and /run. Binaries the hook calls can be
replaced the same way, by bind-mounting a shim over the real file: a counting shim that logs and
execs a copy of the original, or one that hangs. Nothing is mounted or changed outside the
namespaces; each is deleted in teardown.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from pathlib import Path, PurePosixPath

import pytest

from v6gen import render
from v6gen.hooks import hook_source
from v6gen.model import Forwarding, Owner, Plan, ProxyEntry, UplinkPlan
from v6gen.paths import Paths

UPLINK = "up0"
PEER = "peer0"  # the other end of the veth: an interface v6gen does not manage
LOG_LINE = re.compile(
    r"v6gen-hook: (?P<iface>\S+) (?P<state>\S+): restored (?P<n>\d+|\?) proxy entries "
    r"in (?P<ms>\d+\.\d) ms(?P<notes>.*)"
)

_RUNNER = r"""
set -eu
mount --bind "$1" /var/lib
mount --bind "$2" /etc/sysctl.d
mount --bind "$3" /run
envbin=$4 hook=$5 iface=$6 state=$7 path=$8
shift 8
while [ "$#" -ge 2 ]; do mount --bind "$1" "$2"; shift 2; done
exec "$envbin" -i "PATH=$path" "IFACE=$iface" "STATE=$state" AdministrativeState=configured \
    OperationalState=carrier "$hook"
"""

_counter = itertools.count()


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def restore_files(addresses: Iterable[str], uplink: str = UPLINK) -> dict[str, str]:
    """What `v6gen sync` writes for these addresses: the restore file and the sysctl.d file,
    rendered by the real templates, keyed by 'proxy' and 'sysctl'."""
    entries = tuple(ProxyEntry(IPv6Address(a), (Owner("c", "n"),)) for a in addresses)
    plan = Plan(
        (UplinkPlan(uplink, PurePosixPath(f"10-{uplink}.network"), entries, False),),
        Forwarding.SYSCTL_ONLY,
        proxy_delay=0,
    )
    paths = Paths(Path("/"))
    files = render.render(plan, paths)
    return {"proxy": files[paths.restore_file(uplink)], "sysctl": files[paths.sysctl_dropin]}


@dataclass
class HookRun:
    rc: int
    stderr: str
    seconds: float

    @property
    def line(self) -> re.Match[str]:
        lines = self.stderr.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got {self.stderr!r}"
        match = LOG_LINE.fullmatch(lines[0])
        assert match, f"unexpected log line {lines[0]!r}"
        return match


@dataclass
class Lab:
    """One network namespace holding the veth up0/peer0, and the directories the hook sees."""

    tmp: Path
    ns: str = field(default_factory=lambda: f"v6gen-hk-{os.getpid()}-{next(_counter)}")
    shims: dict[Path, Path] = field(default_factory=dict)  # real binary -> file mounted over it

    def __post_init__(self) -> None:
        self.varlib = self.tmp / "varlib"  # over /var/lib
        self.sysctld = self.tmp / "sysctl.d"  # over /etc/sysctl.d
        self.run_dir = self.tmp / "run"  # over /run (the lock file lives there)
        self.bin = self.tmp / "bin"  # copies of real binaries, shims, the hook
        self.calls = self.tmp / "calls.log"
        self.hook = self.bin / "50-v6gen"
        for d in (self.varlib, self.uplinks, self.sysctld, self.run_dir, self.bin):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        shutil.copyfile(hook_source(), self.hook)
        self.hook.chmod(0o755)
        self.envbin = self.bin / "env-real"
        shutil.copy2(self._real("env"), self.envbin)

    # -- namespace ----------------------------------------------------------------------------
    def start(self) -> Lab:
        _run("ip", "netns", "add", self.ns)
        self.ip("link", "add", UPLINK, "type", "veth", "peer", "name", PEER)
        self.ip("link", "set", UPLINK, "up")
        self.ip("link", "set", PEER, "up")
        return self

    def stop(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.ns], capture_output=True, check=False)

    def ip(self, *args: str) -> str:
        return _run("ip", "-n", self.ns, *args)

    def proxies(self, dev: str = UPLINK) -> set[str]:
        out = self.ip("-6", "neigh", "show", "proxy", "dev", dev)
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    def flap(self, dev: str = UPLINK) -> None:
        self.ip("link", "set", dev, "down")
        self.ip("link", "set", dev, "up")

    def sysctl(self, key: str) -> str:
        return _run("ip", "netns", "exec", self.ns, "cat", f"/proc/sys/{key}").strip()

    def set_sysctl(self, key: str, value: str) -> None:
        _run("ip", "netns", "exec", self.ns, "sh", "-c", f'echo {value} > "/proc/sys/{key}"')

    # -- the hook's inputs --------------------------------------------------------------------
    @property
    def uplinks(self) -> Path:
        return self.varlib / "v6gen" / "uplinks"

    def data_file(self, iface: str = UPLINK) -> Path:
        return self.uplinks / f"{iface}.proxy"

    def write_data(self, text: str, iface: str = UPLINK) -> Path:
        path = self.data_file(iface)
        path.write_text(text)
        path.chmod(0o644)
        return path

    def write_sysctl(self, text: str) -> Path:
        path = self.sysctld / "50-v6gen.conf"
        path.write_text(text)
        path.chmod(0o644)
        return path

    # -- replacing binaries -------------------------------------------------------------------
    @staticmethod
    def _real(name: str) -> Path:
        found = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
        assert found, f"{name} not found"
        return Path(found).resolve()

    def shim(self, name: str, body: str | None = None) -> None:
        """Mount a script over the real `name` for the hook's runs. Default: log the call to
        self.calls, then run a copy of the original."""
        real = self._real(name)
        copy = self.bin / f"{name}-real"
        shutil.copy2(real, copy)
        if body is None:
            body = f'echo "{name} $*" >> {self.calls}\nexec {copy} "$@"'
        script = self.bin / f"{name}-shim"
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
        self.shims[real] = script

    def calls_to(self, name: str) -> list[str]:
        if not self.calls.exists():
            return []
        return [c for c in self.calls.read_text().splitlines() if c.split()[0] == name]

    # -- running it ---------------------------------------------------------------------------
    def hook_argv(self, iface: str = UPLINK, state: str = "carrier", path: str = "") -> list[str]:
        mounts = [str(p) for pair in self.shims.items() for p in reversed(pair)]
        return [
            "ip", "netns", "exec", self.ns, "/bin/sh", "-c", _RUNNER, "runner",
            str(self.varlib), str(self.sysctld), str(self.run_dir), str(self.envbin),
            str(self.hook), iface, state, path or str(self.bin / "nothing-here"), *mounts,
        ]  # fmt: skip

    def run_hook(self, iface: str = UPLINK, state: str = "carrier", path: str = "") -> HookRun:
        """Run the hook as networkd-dispatcher would (environment with IFACE, STATE and an
        arbitrary PATH, no arguments)."""
        start = time.monotonic()
        done = subprocess.run(
            self.hook_argv(iface, state, path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return HookRun(done.returncode, done.stderr, time.monotonic() - start)


@pytest.fixture(scope="session")
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(
            "hook tests need root: they run the real hook in a private network namespace "
            "(ip netns, veth, bind mounts); run them as root"
        )
    for tool in ("ip", "mount"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install iproute2 mount")
    if not Path("/etc/sysctl.d").is_dir():
        pytest.fail("/etc/sysctl.d is missing; the hook tests mount a directory over it")


MakeLab = Callable[[], Lab]


@pytest.fixture
def make_lab(as_root: None, tmp_path: Path) -> Iterator[MakeLab]:
    labs: list[Lab] = []

    def make() -> Lab:
        lab = Lab(tmp_path / f"lab{len(labs)}")
        labs.append(lab)
        return lab.start()

    yield make
    for lab in labs:
        lab.stop()


@pytest.fixture
def lab(make_lab: MakeLab) -> Lab:
    return make_lab()
