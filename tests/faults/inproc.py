"""The real `v6gen` command line, in process, on a temporary root: Docker is the real SDK
adapter talking to a DockerReplay socket, the kernel and networkd are the recording fakes, and
the run is live (kernel entries, sysctls, state file) as on a host.

Only `cli._context` is replaced (it would pick the real adapters and make anything but / an
offline run); config loading, the lock, exit codes and every line of output are the CLI's own.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from typer.testing import CliRunner

from v6gen import cli
from v6gen import config as config_mod
from v6gen.adapters.docker import DockerAPI
from v6gen.engine import Adapters, Context
from v6gen.paths import Paths
from v6gen.ports import ProxyKey

from .replay import DockerReplay
from .tree import Snapshot, snapshot
from fakes import FakeKernel, FakeNetworkd

# click 8.1 (Debian 12) mixes stderr into stdout unless told not to; 8.2 removed the option.
_RUNNER_ARGS: dict[str, Any] = (
    {"mix_stderr": False}
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters
    else {}
)

UPLINK_NETWORK = (
    "[Match]\nName=uplink0\n\n[Network]\nAddress=2001:db8::1/64\nGateway=2001:db8::100\n"
)
LAN1_NETWORK = "[Match]\nName=lan1\n\n[Network]\nAddress=2001:db8:1::1/64\n"
# Somebody else's configuration and kernel entries, present in every test: never touched.
ADMIN_DROPIN = "etc/systemd/network/10-uplink0.network.d/60-admin.conf"
ADMIN_DROPIN_TEXT = "[Network]\nIPv6ProxyNDPAddress=2001:db8::beef\n"
FOREIGN: frozenset[ProxyKey] = frozenset(
    {
        ("uplink0", IPv6Address("2001:db8::f00")),
        ("uplink0", IPv6Address("2001:db8::beef")),
        ("lan1", IPv6Address("2001:db8:1::f00")),
    }
)


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@dataclass(frozen=True)
class KernelView:
    proxy: frozenset[ProxyKey]
    sysctls: tuple[tuple[str, str], ...]
    batches: int
    sysctl_writes: int
    reloads: int


@dataclass
class CliHost:
    root: Path
    replay: DockerReplay
    kernel: FakeKernel = field(default_factory=FakeKernel)
    networkd: FakeNetworkd = field(default_factory=FakeNetworkd)

    def __post_init__(self) -> None:
        self.write("etc/systemd/network/10-uplink0.network", UPLINK_NETWORK)
        self.write("etc/systemd/network/20-lan1.network", LAN1_NETWORK)
        self.write(ADMIN_DROPIN, ADMIN_DROPIN_TEXT)
        self.networkd.manage("uplink0", "/etc/systemd/network/10-uplink0.network")
        # lan1 exists and has a prefix, but networkd does not manage it.
        self.kernel.prefixes["lan1"] = (IPv6Network("2001:db8:1::/64"),)
        self.kernel.proxy = set(FOREIGN)

    @property
    def paths(self) -> Paths:
        return Paths(self.root)

    def write(self, relative: str, text: str | bytes) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return path

    def read(self, relative: str) -> str:
        return (self.root / relative).read_text()

    def context(self, config: Path | None, root: Path) -> Context:
        paths = Paths(root.resolve())
        cfg = config_mod.load(config or paths.config, explicit=config is not None)
        docker = DockerAPI(cfg.docker_host or self.replay.url, cfg.docker_timeout)
        return Context(cfg, paths, Adapters(docker, self.networkd, self.kernel), live=True)

    def run(self, *args: str) -> Run:
        result = CliRunner(**_RUNNER_ARGS).invoke(cli.app, [*args, "--root", str(self.root)])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Run(result.exit_code, result.stdout, result.stderr)

    def snapshot(self) -> Snapshot:
        return snapshot(self.root, base=self.root)

    def kernel_view(self) -> KernelView:
        k = self.kernel
        return KernelView(
            frozenset(k.proxy),
            tuple(sorted(k.sysctls.items())),
            len(k.batches),
            len(k.sysctl_writes),
            self.networkd.reloads,
        )


def make_host(root: Path, replay: DockerReplay, monkeypatch: pytest.MonkeyPatch) -> CliHost:
    root.mkdir(parents=True, exist_ok=True)
    host = CliHost(root, replay)
    monkeypatch.setattr(cli, "_context", host.context)
    return host


def network_file(name: str) -> PurePosixPath:
    return PurePosixPath(f"/etc/systemd/network/{name}")
