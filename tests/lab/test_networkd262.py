"""networkd 262 on sid (issue 21): the drop-in lists proxied addresses as ProxyNeighbor=, networkd
itself applies it, and a drop-in written with the old name (as v6gen writes it for 257) is
rewritten with no moment without the kernel's proxy entry and no echo lost; and what a reload
costs containers already proxied (a 10 ms echo stream from the LAN over five reloads).

The old-name drop-in comes from v6gen itself: `systemd_version: 257` in its config makes it
render what it renders on trixie, as before an upgrade; dropping that line is the upgrade.
"""

from __future__ import annotations

from ipaddress import IPv6Address

import pytest

from .conftest import SRC_ONLY, MakeLab
from .image import IMAGE
from .labhost import Lab, poll
from .proxywatch import EchoStream, ProxyTable
from .test_releases import SEEDS
from .test_scenarios import DROPIN, PROBE, proxied_in_dropin, sync

pytestmark = [pytest.mark.lab, SRC_ONLY]
CONFIG = "/etc/v6gen/config.yaml"
NETWORK = "lab_probe-network"  # the compose project "lab"'s network in seed-routed.yml
EXTRA = "2001:db8::a:71a6"


def keys(lab: Lab) -> set[str]:
    """The key names of the proxied-address lines in the uplink's drop-in."""
    lines = lab.read(DROPIN).splitlines()
    return {ln.split("=", 1)[0] for ln in lines if ln.startswith(("IPv6ProxyNDPAddress=", "Proxy"))}


def sid_lab(make_lab: MakeLab, uplinks: int = 1) -> Lab:
    lab = make_lab(release="sid", uplinks=uplinks)
    assert lab.run("networkctl --version").stdout.startswith("systemd 262")
    lab.compose_up(SEEDS["sid"])
    return lab


def networkd_applies_it_alone(lab: Lab) -> bool:
    """With the dispatcher (and so v6gen's hook) stopped, the entry deleted and the uplink
    reconfigured: does networkd put the entry back from the drop-in by itself?"""
    lab.stop_dispatcher()
    lab.run(f"ip -6 neigh del proxy {PROBE} dev uplink0")
    assert PROBE not in lab.proxy_entries()
    lab.run("networkctl reconfigure uplink0")
    return poll(lambda: PROBE in lab.proxy_entries(), 10)


def test_262_writes_proxy_neighbor_which_networkd_applies(make_lab: MakeLab) -> None:
    lab = sid_lab(make_lab)
    sync(lab)
    assert keys(lab) == {"ProxyNeighbor"}
    assert proxied_in_dropin(lab) == {PROBE}
    assert lab.lan_reachable(PROBE, within=3) is not None, "LAN can't reach it after sync"
    assert lab.v6gen("diff").returncode == 0
    assert networkd_applies_it_alone(lab), "networkd 262 did not apply ProxyNeighbor="
    assert "ProxyNeighbor" not in (lab.logdir / "networkd.log").read_text()


def test_old_name_rewritten_with_no_gap_in_the_proxy_table(make_lab: MakeLab) -> None:
    lab = sid_lab(make_lab)
    lab.write(CONFIG, "systemd_version: 257\n")
    sync(lab)
    assert keys(lab) == {"IPv6ProxyNDPAddress"}
    assert lab.lan_reachable(PROBE, within=3) is not None
    # What networkd made of the old name: it must hold the entry on its own too, or the
    # rewrite could only look gapless thanks to v6gen's own kernel entry. The watcher sees
    # that deletion: it can see a gap.
    watcher = ProxyTable(lab.host.pid, IPv6Address(PROBE)).start()
    assert networkd_applies_it_alone(lab), "networkd 262 did not apply IPv6ProxyNDPAddress="
    (seen,) = watcher.stop()
    assert seen.ended is not None
    lab.start_dispatcher()

    table = ProxyTable(lab.host.pid, IPv6Address(PROBE)).start()
    echoes = EchoStream(lab.lan("uplink0").pid, PROBE).start()
    assert poll(lambda: echoes.replied() >= 20, 10), "no echo stream before the rewrite"
    lab.write(CONFIG, "")  # the upgrade: v6gen now sees the running networkd's 262
    out = sync(lab)
    # networkd applies a reload asynchronously: wait until it has the uplink configured again,
    # then keep watching a little longer than it took.
    lab.wait_configured("uplink0", timeout=15)
    settled = echoes.replied() + 50
    assert poll(lambda: echoes.replied() >= settled, 15)
    sent, lost = echoes.stop()
    gaps = table.stop()

    print(f"\nrewrite on 262: {table.samples} samples, gaps {gaps}; {len(lost)} of {sent} lost")
    assert keys(lab) == {"ProxyNeighbor"}, out
    assert gaps == [], f"the proxy entry was missing {gaps} (of {table.samples} samples)"
    assert table.samples > 100, f"only {table.samples} samples of the proxy table"
    assert lost == [], f"{len(lost)} of {sent} echoes lost across the rewrite: {lost[:20]}"
    assert networkd_applies_it_alone(lab), "networkd 262 lost the entry after the rewrite"


def test_reloads_cost_proxied_containers_nothing(make_lab: MakeLab) -> None:
    """Five syncs that each change the drop-in (a second container comes and goes), each with
    its networkd Reload, under a 10 ms echo stream to the first container. A second uplink
    with nothing to proxy shows which links a Reload reconfigures: only those whose files
    changed, so 262's `--no-reconfigure` would spare no other link (v6gen keeps the plain
    Reload: networkd must reconfigure the uplink to hold the new list as its own)."""
    lab = sid_lab(make_lab, uplinks=2)
    sync(lab)
    assert lab.lan_reachable(PROBE, within=3) is not None
    echoes = EchoStream(lab.lan("uplink0").pid, PROBE).start()
    assert poll(lambda: echoes.replied() >= 20, 10)
    reloads = 0
    for i in range(5):
        if i % 2 == 0:
            lab.run(
                f"docker run -d --name extra --network {NETWORK} --ip6 {EXTRA} {IMAGE}"
                " sleep infinity"
            )
        else:
            lab.run("docker rm -f extra")
        out = sync(lab)
        assert (EXTRA in proxied_in_dropin(lab)) == (i % 2 == 0), out
        reloads += 1
        lab.wait_configured("uplink0", timeout=15)
    settled = echoes.replied() + 50
    assert poll(lambda: echoes.replied() >= settled, 15)
    sent, lost = echoes.stop()
    print(f"\n{reloads} reloads on networkd 262: {len(lost)} of {sent} echoes lost")
    log = (lab.logdir / "networkd.log").read_text()
    assert log.count("uplink0: Reconfiguring") >= reloads
    assert "uplink1: Reconfiguring" not in log, "a Reload reconfigured a link whose files stayed"
    assert lost == [], f"{len(lost)} of {sent} echoes lost over {reloads} reloads: {lost[:20]}"
