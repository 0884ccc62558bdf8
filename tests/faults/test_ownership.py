"""What v6gen did not make, it never changes or deletes: .network files, drop-ins (even one
named like v6gen's), dispatcher hooks, sysctl.d and networkd.conf.d files, files in its own
state directory, and kernel proxy entries, including ones for the very addresses it proxies,
on the uplink or on another interface. Through sync, a sync after the containers left, and
clean. (tests/unit/test_sync.py and lab scenario 6 cover single cases with fakes and networkd.)

The first test runs live in a fault host (a real kernel proxy table, faultns.py); the second
runs the CLI in process on a temporary root for files at v6gen's own paths.
"""

from __future__ import annotations

import pytest

from v6gen.render import HEADER

from .faultns import FaultHost
from .inproc import CliHost
from .replay import DockerReplay, body, container
from .tree import Snapshot, snapshot

CONTAINERS = [container(f"c{i}", f"2001:db8::a:{i}") for i in (1, 2, 5)]
OURS = {("uplink0", "2001:db8::a:1"), ("uplink0", "2001:db8::a:2")}
FOREIGN_ENTRIES = {
    ("uplink0", "2001:db8::f00"),  # somebody's, nothing to do with containers
    ("uplink0", "2001:db8::a:5"),  # somebody's, for an address a container gets later
    ("lan0", "2001:db8::a:1"),  # a container's address, but on another interface
}
FOREIGN_FILES = {
    "/etc/systemd/network/10-uplink0.network.d/60-admin.conf": "[Network]\nIPv6ProxyNDP=yes\n",
    "/etc/systemd/network/20-lan0.network": "[Match]\nName=lan0\n",
    # v6gen's file name, in another link's drop-in directory, without v6gen's header
    "/etc/systemd/network/20-lan0.network.d/50-v6gen.conf": "[Network]\nIPv6ProxyNDP=no\n",
    "/etc/systemd/networkd.conf.d/10-admin.conf": "[Network]\nManageForeignRoutes=no\n",
    "/etc/sysctl.d/60-admin.conf": "net.ipv6.neigh.lan0.proxy_delay = 3\n",
    "/etc/networkd-dispatcher/routable.d/10-admin": "#!/bin/sh\nexit 0\n",
    # v6gen's hook name, without its marker line
    "/etc/networkd-dispatcher/carrier.d/50-v6gen": "#!/bin/sh\necho not v6gen's\n",
    "/var/lib/v6gen/uplinks/eth9.proxy": "neigh replace proxy 2001:db8::f01 dev uplink0\n",
    "/var/lib/v6gen/notes.txt": "someone's notes\n",
}


def _tree(host: CliHost) -> Snapshot:
    """The root's files and directories but v6gen's lock (a runtime file under run/)."""
    return snapshot(host.root / "etc", host.root / "var", base=host.root)


def _foreign(host: FaultHost) -> Snapshot:
    return {p: e for p, e in host.snapshot().items() if "/" + p in FOREIGN_FILES}


def test_sync_and_clean_touch_nothing_of_anyone_else(
    fhost: FaultHost, replay: DockerReplay
) -> None:
    for path, text in FOREIGN_FILES.items():
        fhost.write(path, text)
        mode = 0o755 if "dispatcher" in path else 0o644
        fhost.sh(f"chmod {mode:o} {path}")
    for dev, address in sorted(FOREIGN_ENTRIES):
        fhost.sh(f"ip -6 neigh add proxy {address} dev {dev}")
    fhost.sh("sysctl -qw net.ipv6.neigh.lan0.proxy_delay=3")
    delay = fhost.sysctls("net/ipv6/neigh/lan0/proxy_delay")  # read back: jiffies round
    files = _foreign(fhost)
    assert len(files) == len(FOREIGN_FILES)

    def check(step: str, entries: set[tuple[str, str]]) -> None:
        assert _foreign(fhost) == files, f"{step}: a foreign file changed"
        assert fhost.proxy_entries() == FOREIGN_ENTRIES | entries, step
        assert fhost.sysctls("net/ipv6/neigh/lan0/proxy_delay") == delay, step

    replay.containers = body(CONTAINERS)
    run = fhost.v6gen("sync")
    assert run.code == 5, run  # networkd is not running in here: reload pending
    # 2001:db8::a:5 was somebody's first: proxied in the drop-in, not added, not claimed.
    assert "add    2001:db8::a:5" not in run.out
    assert (
        "warning: /etc/networkd-dispatcher/carrier.d/50-v6gen exists but is not v6gen's; "
        "left alone\n"
    ) in run.err
    check("sync", OURS)
    assert "IPv6ProxyNDPAddress=2001:db8::a:5" in fhost.read(
        "/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf"
    )

    replay.containers = body([])
    run = fhost.v6gen("sync")
    assert run.code in (0, 5) and "error" not in run.err, run
    assert sorted(line for line in run.out.splitlines() if line.startswith("remove 2")) == [
        "remove 2001:db8::a:1 on uplink0",
        "remove 2001:db8::a:2 on uplink0",
    ]
    check("sync after the containers left", set())

    replay.containers = body(CONTAINERS)
    assert fhost.v6gen("sync").code == 5
    run = fhost.v6gen("clean")
    assert run.code in (0, 5) and "error" not in run.err, run
    check("clean", set())
    assert not fhost.path("/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf").exists()
    assert fhost.path("/etc/networkd-dispatcher/routable.d").is_dir()  # not empty: kept


@pytest.mark.parametrize(
    "path",
    [
        "etc/systemd/network/10-uplink0.network.d/50-v6gen.conf",
        "etc/sysctl.d/50-v6gen.conf",
        "var/lib/v6gen/uplinks/uplink0.proxy",
    ],
)
def test_a_foreign_file_at_v6gen_s_path_is_refused_and_kept(
    host: CliHost, replay: DockerReplay, path: str
) -> None:
    text = f"# not {HEADER}\n[Network]\nIPv6ProxyNDP=no\n"
    host.write(path, text)
    before = _tree(host)
    kernel = host.kernel_view()
    replay.containers = body(CONTAINERS)
    r = host.run("sync")
    assert (r.code, r.out) == (7, "")
    assert r.err == (
        f"error: /{path} exists but was not generated by v6gen\n"
        "hint: v6gen never overwrites other people's files: move it away, or merge it by hand\n"
    )
    # Refused before anything was done: no other file, no state, no kernel entry.
    assert _tree(host) == before
    assert host.kernel_view() == kernel
    r = host.run("clean")
    assert r.code == 0
    assert host.read(path) == text
