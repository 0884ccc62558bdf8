"""The lab on other Debian releases (LabOptions.release): trixie (networkd 257, docker.io 26.1,
python3 3.13) and sid (networkd 262, docker.io 28.5, python3 3.14), each its own root
filesystem with every daemon and v6gen's interpreter and libraries from that release.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from . import rootfs
from .conftest import MakeLab
from .labhost import INSTALLED_ENV
from .test_scenarios import COMPOSE, PROBE, SEED, proxied_in_dropin, snapshot, sync

pytestmark = [
    pytest.mark.lab,
    # The package under test (autopkgtest) is installed on the machine's own release; these labs
    # run v6gen in another release's root filesystem, from src/.
    pytest.mark.skipif(
        os.environ.get(INSTALLED_ENV) == "1",
        reason="runs src/ in a release's chroot, not the package",
    ),
]

# What each release must be running, so a test can't pass on the machine's own by mistake.
VERSIONS = {
    "trixie": {"networkd": "systemd 257", "python": "Python 3.13.", "docker": "26.1."},
    "sid": {"networkd": "systemd 262", "python": "Python 3.14.", "docker": "28.5."},
}
# On sid, Docker 28 in its default (nat) gateway mode drops what the LAN sends the container:
# the network is `routed`, as the README tells users to do.
SEEDS = {"trixie": SEED, "sid": COMPOSE / "seed-routed.yml"}


@pytest.mark.parametrize("release", sorted(VERSIONS))
def test_1_seed_reachable_only_after_sync(make_lab: MakeLab, release: str) -> None:
    lab = make_lab(release=release)
    want = VERSIONS[release]
    assert lab.run("networkctl --version").stdout.startswith(want["networkd"])
    assert lab.run(f"{lab.python} --version").stdout.startswith(want["python"])
    assert lab.docker.get_json("/version")["Version"].startswith(want["docker"])

    lab.compose_up(SEEDS[release])
    assert not lab.lan_ping(PROBE), "LAN reaches the container before any sync"
    assert lab.v6gen("diff").returncode == 1, "diff must report pending changes before sync"

    sync(lab)
    assert proxied_in_dropin(lab) == {PROBE}
    assert PROBE in lab.proxy_entries()
    assert lab.lan_reachable(PROBE, within=3) is not None, "LAN can't reach it after sync"

    before = snapshot(lab)
    sync(lab)
    assert snapshot(lab) == before, "a second sync changed files"
    assert lab.v6gen("diff").returncode == 0

    # All of it (v6gen's files, dockerd's state, the daemons' runtime files) went into the
    # lab's own layers: the cached tree is as mmdebstrap left it.
    lab.stop()
    tree = rootfs.path(release)
    changed = subprocess.run(
        ["find", str(tree), "-xdev", "-newer", str(tree / rootfs.STAMP), "-print", "-quit"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert changed == "", f"the lab wrote into the cached {release} tree: {changed}"
