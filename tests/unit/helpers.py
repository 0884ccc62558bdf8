"""A fake host: a temporary root plus fake adapters, with the seed uplink already managed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from v6gen.config import Config
from v6gen.engine import Adapters, Context
from v6gen.paths import Paths

from fakes import FakeDocker, FakeKernel, FakeNetworkd

UPLINK_NETWORK = "[Match]\nName=uplink0\n\n[Network]\nAddress=2001:db8::1/64\n"


@dataclass
class Host:
    root: Path
    docker: FakeDocker = field(default_factory=FakeDocker)
    networkd: FakeNetworkd = field(default_factory=FakeNetworkd)
    kernel: FakeKernel = field(default_factory=FakeKernel)
    config: Config = field(default_factory=Config)

    def __post_init__(self) -> None:
        main = self.root / "etc/systemd/network/10-uplink0.network"
        main.parent.mkdir(parents=True, exist_ok=True)
        main.write_text(UPLINK_NETWORK)
        self.networkd.manage("uplink0", "/etc/systemd/network/10-uplink0.network")

    @property
    def paths(self) -> Paths:
        return Paths(self.root)

    def ctx(self, live: bool = True) -> Context:
        adapters = Adapters(self.docker, self.networkd, self.kernel)
        return Context(self.config, self.paths, adapters, live=live)

    @property
    def dropin(self) -> Path:
        return self.paths.dropin("10-uplink0.network")

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the root with its bytes, to prove something changed nothing."""
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and p.name != "lock"
        }
