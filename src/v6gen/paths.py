"""Every file location v6gen reads or writes, relative to one root, so a sync can render into
a scratch directory (`--root`) exactly as it would onto the host."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# networkd's search order for .network files and their drop-in directories; /lib is there for
# hosts without merged /usr.
NETWORK_DIRS = (
    "etc/systemd/network",
    "run/systemd/network",
    "usr/local/lib/systemd/network",
    "usr/lib/systemd/network",
    "lib/systemd/network",
)

# networkd-dispatcher states the hook runs in. The kernel flushes proxy entries when a link goes
# admin-down, but entries added while it is down survive it coming up (measured on 6.18): so
# restoring at "off"/"no-carrier" has them in place the instant the link is back, where waiting
# for the carrier event costs 0.4-1 s. The later states repair whatever happened meanwhile.
DISPATCHER_STATES = ("off", "no-carrier", "carrier", "degraded", "routable", "configured")

OWNED_NAME = "50-v6gen.conf"
HOOK_NAME = "50-v6gen"


@dataclass(frozen=True)
class Paths:
    root: Path = Path("/")

    def under(self, absolute: str | Path) -> Path:
        """Map an absolute host path (e.g. a NetworkFile networkd reported) into the root."""
        return self.root / Path(absolute).relative_to("/")

    def host_path(self, path: Path) -> Path:
        """The inverse of under(): how a file inside the root is named on the target host."""
        return Path("/") / path.relative_to(self.root)

    @property
    def config(self) -> Path:
        return self.root / "etc/v6gen/config.yaml"

    @property
    def network_dirs(self) -> tuple[Path, ...]:
        return tuple(self.root / d for d in NETWORK_DIRS)

    @property
    def etc_network(self) -> Path:
        return self.root / "etc/systemd/network"

    def dropin(self, network_file: str) -> Path:
        """Our drop-in for a .network file; always under /etc so it wins over /run and /usr."""
        return self.etc_network / f"{network_file}.d" / OWNED_NAME

    @property
    def networkd_conf_dropin(self) -> Path:
        """Where earlier versions of v6gen switched forwarding on for systemd >= 256: manager-wide,
        which stopped router advertisements on other links. Now only ever removed."""
        return self.root / "etc/systemd/networkd.conf.d" / OWNED_NAME

    @property
    def sysctl_dropin(self) -> Path:
        return self.root / "etc/sysctl.d" / "50-v6gen.conf"

    @property
    def state_dir(self) -> Path:
        return self.root / "var/lib/v6gen"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def claims_file(self) -> Path:
        """Addresses a probe found someone else answering for, with who (v6gen.claims)."""
        return self.state_dir / "claims.json"

    def restore_file(self, uplink: str) -> Path:
        """Per-uplink `ip -batch` input that the dispatcher hook replays on link events."""
        return self.state_dir / "uplinks" / f"{uplink}.proxy"

    @property
    def restore_dir(self) -> Path:
        return self.state_dir / "uplinks"

    @property
    def lock_file(self) -> Path:
        return self.root / "run/v6gen/lock"

    @property
    def firewall_cache(self) -> Path:
        """The replay's answers and verdicts (adapters.firewalls): a cache, so in /run, where
        a sync that changed nothing leaves no trace on disk (and a reboot, which reloads the
        rules anyway, clears it). Its .verdicts sibling holds the last ruleset's verdicts."""
        return self.root / "run/v6gen/firewall-replay.json"

    @property
    def translate_ruleset(self) -> Path:
        """The translation table as v6gen last loaded it (`nft -f` input): in /run, since the
        kernel's table goes with a reboot too."""
        return self.root / "run/v6gen/translate.nft"

    @property
    def reload_marker(self) -> Path:
        """Exists while networkd owes a reload for files v6gen wrote: a run that failed to
        reload, was killed before it could, or (watch) put it off leaves it for the next."""
        return self.root / "run/v6gen/reload-owed"

    @property
    def netif_links(self) -> Path:
        return self.root / "run/systemd/netif/links"

    def hook_dirs(self, base: str) -> tuple[Path, ...]:
        return tuple(self.root / base / f"{state}.d" for state in DISPATCHER_STATES)

    @property
    def packaged_hook_base(self) -> Path:
        return self.root / "usr/lib/networkd-dispatcher"

    @property
    def local_hook_base(self) -> Path:
        return self.root / "etc/networkd-dispatcher"
