"""The file system refuses: /etc/systemd/network read-only, or a file system full (ENOSPC) in the
middle of a write. Each gives a clear error (exit 7), leaves every file as it was (no partial
file, no temp file, the state file not claiming what never reached the kernel) and the kernel
untouched; once the file system is fixed, the next sync converges.

Live runs in a fault host (faultns.py), where each directory v6gen writes is a tmpfs of its own:
read-only is a real `mount -o remount,ro`, a full disk a real tmpfs remounted with a small
size= and filled to the last page, both only inside the fault host's mount namespace.
"""

from __future__ import annotations

import pytest

from .faultns import FaultHost, Run
from .replay import DockerReplay, body, container
from .tree import Snapshot, changed

BEFORE = [container(f"c{i}", f"2001:db8::a:{i:x}") for i in range(1, 4)]
# Many more: the new drop-in and restore file need several pages of the full file system.
AFTER = [container(f"c{i}", f"2001:db8::a:{i:x}") for i in range(1, 300)]
DROPIN = "/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf"
WRITE_HINT = (
    "hint: check that the file system is writable and not full; files already written are "
    "complete, and the kernel was not changed yet\n"
)
SYSCTLS = (
    "net/ipv6/conf/all/forwarding",
    "net/ipv6/conf/uplink0/proxy_ndp",
    "net/ipv6/neigh/uplink0/proxy_delay",
)


@pytest.fixture
def synced(fhost: FaultHost, replay: DockerReplay) -> FaultHost:
    replay.containers = body(BEFORE)
    assert fhost.v6gen("sync").code == 5  # networkd is not running in here: reload pending
    replay.containers = body(AFTER)
    return fhost


def _everything(host: FaultHost) -> tuple[Snapshot, frozenset[tuple[str, str]], dict[str, str]]:
    return host.snapshot(), host.proxy_entries(), host.sysctls(*SYSCTLS)


def _refused(host: FaultHost, command: str, error: str, hint: str = WRITE_HINT) -> None:
    before = _everything(host)
    run = host.v6gen(command)
    assert (run.code, run.out, run.err) == (7, "", f"error: {error}\n{hint}")
    after = _everything(host)
    assert changed(before[0], after[0]) == {}  # byte for byte, temp files included
    assert after[1:] == before[1:]


def _converges(host: FaultHost) -> None:
    run: Run = host.v6gen("sync")
    assert run.code == 5 and "error" not in run.err, run
    assert host.read(DROPIN).count("IPv6ProxyNDPAddress=") == len(AFTER)
    assert len(host.proxy_entries()) == len(AFTER)
    # Converged: nothing left but the reload this networkd-less host can never do, still owed.
    again = host.v6gen("sync")
    assert (again.code, again.out) == (5, ""), again
    assert "networkd was not reloaded" in again.err, again


def _fill(host: FaultHost, directory: str) -> None:
    """Shrink the tmpfs at `directory` and fill it to the last page with a foreign file."""
    host.sh(f"mount -o remount,size=64k {directory}")
    host.sh(f"dd if=/dev/zero of={directory}/zz-filler bs=4k 2>/dev/null || true")
    probe = host.sh(f"dd if=/dev/zero of={directory}/zz-probe bs=4k count=1", check=False)
    assert probe.code != 0 and "No space left on device" in probe.err, probe
    host.sh(f"rm -f {directory}/zz-probe")


def test_read_only_network_dir(synced: FaultHost) -> None:
    synced.sh("mount -o remount,ro /etc/systemd/network")
    # Refused before the first change, so neither sync nor clean is left half done.
    ro = "is the file system mounted read-only? nothing was changed"
    dropin_dir = DROPIN.rsplit("/", 1)[0]
    _refused(
        synced, "sync", f"cannot write {DROPIN}: {dropin_dir} is not writable", f"hint: {ro}\n"
    )
    _refused(
        synced, "clean", f"cannot write {DROPIN}: {dropin_dir} is not writable", f"hint: {ro}\n"
    )
    synced.sh("mount -o remount,rw /etc/systemd/network")
    _converges(synced)


def test_disk_full_while_writing_the_dropin(synced: FaultHost) -> None:
    _fill(synced, "/etc/systemd/network")
    _refused(synced, "sync", f"cannot write {DROPIN}: No space left on device")
    synced.sh("rm /etc/systemd/network/zz-filler")
    _converges(synced)


def test_disk_full_where_the_state_lives(synced: FaultHost) -> None:
    _fill(synced, "/var/lib/v6gen")
    _refused(
        synced,
        "sync",
        "cannot write /var/lib/v6gen/state.json: No space left on device",
        "hint: v6gen keeps its state there: check that it is a writable regular file on a file "
        "system that is not full\n",
    )
    synced.sh("rm /var/lib/v6gen/zz-filler")
    _converges(synced)
