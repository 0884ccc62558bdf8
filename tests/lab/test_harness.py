"""The lab proves itself without v6gen: if these fail, the scenario results mean nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import kernel
from .conftest import MakeLab
from .labhost import Lab, cgroup_roots, poll
from .nsproc import LabError, ns_inode

pytestmark = pytest.mark.lab

COMPOSE = Path(__file__).resolve().parent / "compose"
PROBE = "2001:db8::a:71a5"


def _host_mounts() -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]


@pytest.mark.parametrize("networkd", ["252", "247"])
def test_manual_proxy_makes_container_reachable(make_lab: MakeLab, networkd: str) -> None:
    lab = make_lab(networkd=networkd)
    lab.compose_up(COMPOSE / "seed.yml")
    assert not lab.lan_ping(PROBE), "reachable without any proxy entry: the lab proves nothing"
    lab.run(
        "sysctl -qw net.ipv6.conf.all.forwarding=1 net.ipv6.conf.uplink0.proxy_ndp=1"
        f" && ip -6 neigh replace proxy {PROBE} dev uplink0"
    )
    assert lab.lan_reachable(PROBE, within=3) is not None
    lab.run(f"ip -6 neigh del proxy {PROBE} dev uplink0")
    assert not lab.lan_ping(PROBE)


@pytest.mark.parametrize("networkd", ["252", "247", "257"])
def test_networkd_applies_dropin_and_restores_after_flap(make_lab: MakeLab, networkd: str) -> None:
    """What networkd does on its own, dispatcher stopped.

    Bug #18378 (entries lost after down/up) is NOT in Debian's 247.3-7+deb11u5, the only 247
    on the mirror: Debian backported the fix in 247.3-4 (changelog: "network: Delay addition
    of IPv6 Proxy NDP addresses", Closes: #985510). Measured: both versions re-add the entries.
    """
    lab = make_lab(networkd=networkd, dispatcher=False)
    lab.write(
        "/etc/systemd/network/10-uplink0.network.d/60-lab.conf",
        f"[Network]\nIPv6ProxyNDP=yes\nIPv6ProxyNDPAddress={PROBE}\nIPForward=ipv6\n",
    )
    lab.networkctl_reload()
    assert poll(lambda: PROBE in lab.proxy_entries(), 5), "networkd did not add the entry"
    lab.run("ip link set uplink0 down")
    assert PROBE not in lab.proxy_entries(), "the kernel keeps proxy entries over link down?"
    lab.run("ip link set uplink0 up")
    assert poll(lambda: PROBE in lab.proxy_entries(), 5), "networkd did not re-add the entry"


def test_ra_only_uplink_gets_slaac(make_lab: MakeLab) -> None:
    lab = make_lab(ra_only=True)
    addrs = lab.run("ip -6 addr show dev uplink0 scope global").stdout
    assert "2001:db8::" in addrs and "dynamic" in addrs
    assert any("dev uplink0" in r and "fe80::" in r for r in lab.default_routes())


def test_netplan_style_file_is_used(make_lab: MakeLab) -> None:
    lab = make_lab(netplan=True)
    status = lab.run("networkctl status uplink0").stdout
    assert "/run/systemd/network/10-netplan-uplink0.network" in status
    assert not lab.path("/etc/systemd/network/10-uplink0.network").exists()


def test_second_uplink_has_its_own_lan(make_lab: MakeLab) -> None:
    lab = make_lab(uplinks=2)
    assert lab.lan("uplink1").run("/bin/busybox ping -6 -c 1 -W 1 2001:db8:1::1").returncode == 0
    assert len(lab.default_routes()) == 1 and "uplink0" in lab.default_routes()[0]


def test_teardown_leaves_nothing(lab_prereqs: None, tmp_path: Path) -> None:
    mounts_before = sorted(_host_mounts())
    lab = Lab(tmp_path / "solo")
    lab.start()
    try:
        lab.compose_up(COMPOSE / "seed.yml")
        lab.v6gen("--version")
        lab.write("/var/lib/v6gen/probe", "x")
        netns = ns_inode(lab.host.pid, "net")
        cgroup = lab.cgroup_parent
        # The container's cgroups, found while it runs: the check below is not vacuous.
        live = cgroup_roots(cgroup)
    finally:
        lab.stop()
    assert sorted(_host_mounts()) == mounts_before
    assert not Path("/var/lib/v6gen/probe").exists()
    assert live, f"no cgroup {cgroup} found while the lab's container ran"
    assert cgroup_roots(cgroup) == []
    leftovers = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and netns in (ns_inode(int(p.name), k) for k in ("net", "mnt")):
            leftovers.append(p.name)
    assert leftovers == [], f"processes left in the lab namespace: {leftovers}"


def test_labs_in_sequence(make_lab: MakeLab) -> None:
    for networkd in ("252", "247", "252"):
        lab = make_lab(networkd=networkd)
        assert lab.bringup_seconds < 20
        lab.stop()


def test_lab_fixture_defaults(lab: Lab) -> None:
    assert lab.link_state("uplink0").get("ADMIN_STATE") == "configured"
    assert lab.docker.get_json("/images/json")[0]["RepoTags"] == ["v6gen-busybox:lab"]


def test_kernel_preflight_names_what_is_missing(
    lab_prereqs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine's kernel has what the lab needs (lab_prereqs checked it), and a feature it
    lacked would be named with its option and what needs it, not found later as a daemon that
    never starts. The missing feature is a probe that fails the way ip does for an unknown
    link type, so this holds whatever the machine's kernel has."""
    assert kernel.missing_features() == []
    lacking = (
        "frobnicator",
        "CONFIG_FROB",
        "nothing real",
        "echo 'Unknown device type.' >&2; false",
    )
    monkeypatch.setattr(kernel, "PROBES", (*kernel.PROBES, lacking))
    with pytest.raises(LabError) as err:
        kernel.check()
    lines = str(err.value).splitlines()
    assert lines[1:-1] == ["  frobnicator (CONFIG_FROB), for nothing real: Unknown device type."]
