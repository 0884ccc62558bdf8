"""The kernel: proxy entries over rtnetlink in this process (adapters/netlink.py: watch's fast
path starts no process), the rest through iproute2 (`ip -json`) and /proc/sys."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterable
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

from v6gen import firewall, hostview
from v6gen.adapters.bridgedad import BridgeDad
from v6gen.adapters.netlink import ProxyTable
from v6gen.errors import KernelError
from v6gen.model import Ip6Filter
from v6gen.ports import ProxyKey

_TIMEOUT = 20.0  # 10k entries in one batch take well under a second; this only bounds a hang
_SBIN = "/usr/sbin:/sbin"  # where Debian puts ip6tables-save, off a user's PATH
_ACTIVE_STATES = {"REACHABLE", "DELAY", "PROBE", "PERMANENT"}


class IpKernel:
    def __init__(self, ip: str = "ip", proc_sys: Path | None = None) -> None:
        self._ip = ip
        self._proc_sys = proc_sys or hostview.proc_sys()
        self._deprecated: dict[str, tuple[IPv6Network, ...]] = {}
        self._proxies = ProxyTable()

    def _run(self, *args: str, stdin: str | None = None) -> str:
        cmd = [self._ip, *args]
        try:
            done = subprocess.run(
                cmd, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT, check=False
            )
        except FileNotFoundError:
            raise KernelError(f"{self._ip} not found", "install iproute2") from None
        except subprocess.TimeoutExpired:
            raise KernelError(f"`{' '.join(cmd)}` did not finish in {_TIMEOUT:.0f} s", "") from None
        if done.returncode != 0:
            raise KernelError(
                f"`{' '.join(cmd[:6])}` failed: {done.stderr.strip() or done.returncode}",
                "run it by hand to see why; v6gen needs root (CAP_NET_ADMIN)",
            )
        return done.stdout

    def _json(self, *args: str) -> list[dict[str, Any]]:
        out = self._run("-json", *args).strip()
        try:
            data = json.loads(out) if out else []
        except json.JSONDecodeError:
            raise KernelError(
                f"`ip {' '.join(args)}` printed no JSON", "iproute2 >= 4.14 needed"
            ) from None
        return [d for d in data if isinstance(d, dict)]

    def default_route_interfaces(self) -> list[str]:
        routes = self._json("-6", "route", "show", "default")
        routes.sort(key=lambda r: int(r.get("metric", 0)))
        names: list[str] = []
        for r in routes:
            # Multipath defaults list their devices under "nexthops".
            devs = [r.get("dev")] + [h.get("dev") for h in r.get("nexthops", [])]
            names += [d for d in devs if isinstance(d, str) and d not in names]
        return names

    def link_exists(self, name: str) -> bool:
        return (Path("/sys/class/net") / name).exists()

    def link_prefixes(self, name: str) -> tuple[IPv6Network, ...]:
        prefixes: set[IPv6Network] = set()
        fresh: set[IPv6Network] = set()  # with an address that is not deprecated
        for link in self._json("-6", "addr", "show", "dev", name, "scope", "global"):
            for info in link.get("addr_info", []):
                if info.get("family") == "inet6" and "local" in info:
                    net = IPv6Network(f"{info['local']}/{info['prefixlen']}", strict=False)
                    prefixes.add(net)
                    if not info.get("deprecated"):
                        fresh.add(net)
        # Read from the same listing, which deprecated_prefixes() then answers from.
        self._deprecated[name] = tuple(sorted(prefixes - fresh))
        hosts = [p.network_address for p in prefixes if p.prefixlen == 128]
        if hosts:
            # A DHCPv6 address is a /128; the on-link /64 then comes from an RA route with no
            # gateway, counted while that address is in it: an address is what the watch's
            # monitor (adapters/addrmonitor.py) follows, and the kernel keeps an expired route
            # (`"expires": -1`) until its garbage collection, seconds later.
            for route in self._json("-6", "route", "show", "dev", name):
                dst = route.get("dst", "")
                if "gateway" in route or "via" in route or not isinstance(dst, str):
                    continue
                expires = route.get("expires")
                if isinstance(expires, int) and expires <= 0:
                    continue
                try:
                    net = IPv6Network(dst if "/" in dst else f"{dst}/128")
                except ValueError:
                    continue  # "default", "multicast ..." and the like
                if not (net.is_link_local or net.is_multicast) and any(h in net for h in hosts):
                    prefixes.add(net)
        return tuple(sorted(prefixes))

    def deprecated_prefixes(self, name: str) -> tuple[IPv6Network, ...]:
        if name not in self._deprecated:
            self.link_prefixes(name)
        return self._deprecated[name]

    def ip6_filter(self) -> Ip6Filter | None:
        # The same ip6tables-save Docker's ip6tables calls use (legacy or nft, as the host's
        # alternative says): it sees the tables Docker wrote.
        save = shutil.which("ip6tables-save") or shutil.which("ip6tables-save", path=_SBIN)
        if save is None:
            return Ip6Filter(docker_chains=False)  # without ip6tables Docker can't filter IPv6
        try:
            done = subprocess.run(
                [save], capture_output=True, text=True, timeout=_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        return firewall.parse_ip6tables_save(done.stdout)

    def uses_router_advertisements(self, name: str) -> bool:
        # SLAAC addresses are "dynamic" with a finite lifetime; RA routes have protocol "ra".
        for link in self._json("-6", "addr", "show", "dev", name, "scope", "global"):
            for info in link.get("addr_info", []):
                if info.get("dynamic") or info.get("valid_life_time", 4294967295) != 4294967295:
                    return True
        return any(
            r.get("protocol") == "ra" for r in self._json("-6", "route", "show", "dev", name)
        )

    def host_addresses(self) -> dict[IPv6Address, str]:
        found: dict[IPv6Address, str] = {}
        for link in self._json("-6", "addr", "show", "scope", "global"):
            for info in link.get("addr_info", []):
                local, name = info.get("local"), link.get("ifname")
                if (
                    info.get("family") == "inet6"
                    and isinstance(local, str)
                    and isinstance(name, str)
                ):
                    with contextlib.suppress(ValueError):
                        found.setdefault(IPv6Address(local), name)
        return found

    def active_neighbours(self, name: str) -> dict[IPv6Address, str]:
        found: dict[IPv6Address, str] = {}
        for n in self._json("-6", "neigh", "show", "dev", name):
            states = n.get("state", [])
            # STALE may be hours old (below gc_thresh1 the kernel never collects it): an address
            # that moved from a LAN host into a container must not be refused for that.
            if not isinstance(states, list) or not set(states) & _ACTIVE_STATES:
                continue
            dst, lladdr = n.get("dst"), n.get("lladdr", "")
            if isinstance(dst, str):
                with contextlib.suppress(ValueError):
                    found[IPv6Address(dst)] = str(lladdr)
        return found

    def proxy_entries(self) -> set[ProxyKey]:
        return self._proxies.entries()

    def change_proxy(self, add: Iterable[ProxyKey], delete: Iterable[ProxyKey]) -> None:
        self._proxies.change(add, delete)

    def end_dad(self, subnets: Iterable[IPv6Network]) -> list[str]:
        return BridgeDad(self._proc_sys).end(subnets)

    def read_sysctl(self, key: str) -> str | None:
        try:
            return (self._proc_sys / key).read_text().strip()
        except OSError:
            return None

    def write_sysctl(self, key: str, value: str) -> None:
        try:
            (self._proc_sys / key).write_text(value + "\n")
        except OSError as exc:
            raise KernelError(
                f"cannot set {key.replace('/', '.')}={value}: {exc.strerror}", "v6gen needs root"
            ) from None
