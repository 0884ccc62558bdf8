"""What the lab needs of the machine's kernel, checked once before the first lab test.

The lab runs on whatever kernel the machine has (a build without modules here, 6.18 today), so
a feature compiled out would otherwise show up as a daemon that never starts ("timed out
waiting for docker") or an unrelated-looking failure deep in a test. Each probe runs in a
throwaway network namespace and names the kernel option that a failure points to. Nothing here
depends on the kernel's version or the CPU: only on whether the feature is there. ipvlan is not
probed: the lab never asks the machine's kernel for it (vm.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .nsproc import LabError

# (what, kernel option, what needs it, shell probe run in a fresh network namespace)
PROBES: tuple[tuple[str, str, str, str], ...] = (
    ("veth", "CONFIG_VETH", "every lab link", "ip link add name a type veth peer name b"),
    (
        "bridge",
        "CONFIG_BRIDGE",
        "Docker's and netavark's networks",
        "ip link add name br type bridge",
    ),
    (
        "macvlan",
        "CONFIG_MACVLAN",
        "test_lan_ndp's macvlan network",
        "ip link add name a type veth peer name b && ip link add name m link a type macvlan",
    ),
    (
        "proxy NDP",
        "CONFIG_IPV6",
        "what v6gen sets",
        "test -e /proc/sys/net/ipv6/conf/all/proxy_ndp && ip -6 neigh add proxy 2001:db8::1 dev lo",
    ),
    (
        "ip6tables over nf_tables",
        "CONFIG_NF_TABLES_IPV6, CONFIG_NFT_COMPAT's matches, CONFIG_NF_CONNTRACK",
        "dockerd's default firewall",
        "ip6tables -t raw -A PREROUTING -d 2001:db8::1 -j DROP && "
        "ip6tables -A FORWARD -m conntrack --ctstate ESTABLISHED -j ACCEPT && "
        "iptables -t nat -A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE",
    ),
    (
        "br_netfilter",
        "CONFIG_BRIDGE_NETFILTER",
        "dockerd 27.3+ with --userland-proxy=false (sid)",
        "test -e /proc/sys/net/bridge/bridge-nf-call-ip6tables",
    ),
    (
        "overlayfs",
        "CONFIG_OVERLAY_FS",
        "the lab's /etc and /var/lib, the release trees",
        "grep -qw overlay /proc/filesystems",
    ),
    (
        "/proc/PID/task/TID/children",
        "CONFIG_PROC_CHILDREN",
        "release.py and boot.py finding their namespaces' processes",
        'test -e "/proc/$$/task/$$/children"',
    ),
    (
        "seccomp filters",
        "CONFIG_SECCOMP_FILTER",
        "the booted tier's sandboxed units",
        "test -r /proc/sys/kernel/seccomp/actions_avail",
    ),
)


def missing_features() -> list[str]:
    """One line per feature the kernel lacks, with its option and what needs it."""
    missing = []
    for what, option, needed_by, probe in PROBES:
        # A namespace of its own per probe: nothing one leaves behind can fail the next.
        res = subprocess.run(
            ["unshare", "--net", "sh", "-c", probe], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            said = (res.stderr.strip().splitlines() or ["no output"])[-1]
            missing.append(f"{what} ({option}), for {needed_by}: {said}")
    return missing


def check() -> None:
    if not Path("/proc/sys/net/ipv6").is_dir():
        raise LabError("this machine's kernel has no IPv6 (CONFIG_IPV6): the lab can't run")
    missing = missing_features()
    if missing:
        raise LabError(
            "this machine's kernel lacks what the lab needs:\n  "
            + "\n  ".join(missing)
            + f"\n(kernel {Path('/proc/sys/kernel/osrelease').read_text().strip()})"
        )
