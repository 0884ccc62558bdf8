"""Issue 12's package half: the .deb (built once, on the machine's bookworm) installed with apt on
trixie and sid while their own networkd, networkd-dispatcher and dockerd run.

The lab host is the release's root filesystem (release.py) in dpkg mode: the whole tree is an
overlay whose upper layer is the lab's, so apt-get and dpkg write there only, and maintainer
scripts meet the lab's daemons through the lab's systemctl stand-in (labhost.SYSTEMCTL). Every
dependency is in the root filesystem already (rootfs.py), so apt installs without a download,
as on a host that runs Docker from Debian.

On each release: the seed's container runs before the package arrives; the postinst's sync
proxies it and the LAN reaches it, with v6gen running under the release's python3 and Debian's
libraries; the packaged hooks heal an uplink flap; purge leaves no v6gen file and no entry, while
someone else's survive. On sid (Docker 28) the seed's network is `routed`, and a second container
on a default (`nat`) network shows what the postinst says of one the LAN can't reach: the
install still succeeds (sync's exit 9 is a warning there), the network and the option that fixes
it are named, and that address is not proxied.
"""

from __future__ import annotations

import re
import shutil

import pytest

from .conftest import MakeLab
from .debpkg import HOOK_BASE, Deb, assert_host_untouched
from .labhost import Lab, poll
from .test_deb import (
    MAINT_ENV,
    PROBE,
    SEED,
    add_foreign,
    add_foreign_entry,
    assert_installed_and_proxying,
    assert_purged,
    output,
    status,
)
from .test_releases import SEEDS, VERSIONS

pytestmark = pytest.mark.lab

RELEASES = sorted(VERSIONS)
# Where the .deb is put inside the lab: its /tmp is the lab's own tmpfs.
DEB_INSIDE = "/tmp/v6gen_all.deb"
# sid's second network, in Docker's default gateway mode: Docker 28 drops what the LAN sends it.
NAT_NET, NAT_SUBNET, NAT_ADDR = "natnet", "2001:db8::b:0/125", "2001:db8::b:2"


def apt_local(lab: Lab, *args: str) -> str:
    """apt-get inside the release's lab, from what is installed and the local .deb only: the
    lab's network namespace has no way out, so anything apt would fetch fails the test."""
    apt = [*MAINT_ENV, "apt-get", "-q", "-y", "--no-install-recommends"]
    res = lab.run([*apt, *args], check=False, timeout=300)
    assert res.returncode == 0, f"apt-get {' '.join(args)}: exit {res.returncode}\n{output(res)}"
    return output(res)


def start_nat_container(lab: Lab) -> None:
    lab.run(f"docker network create --ipv6 --subnet {NAT_SUBNET} {NAT_NET}")
    lab.run(
        f"docker run -d --name natted --network {NAT_NET} --ip6 {NAT_ADDR}"
        " v6gen-busybox:lab sleep infinity"
    )


@pytest.mark.parametrize("release", RELEASES)
def test_apt_install_flap_purge(
    make_lab: MakeLab, v6gen_deb: Deb, host_before: dict[str, object], release: str
) -> None:
    lab = make_lab(release=release, dpkg=True, installed=True)
    assert lab.docker.get_json("/version")["Version"].startswith(VERSIONS[release]["docker"])
    assert status(lab, "v6gen") in ("", "not-installed")
    foreign = add_foreign(lab)
    seed = SEEDS[release]
    lab.compose_up(seed)
    if seed != SEED:
        start_nat_container(lab)
    assert not lab.lan_ping(PROBE)

    shutil.copyfile(v6gen_deb.path, lab.path(DEB_INSIDE))
    out = apt_local(lab, "install", DEB_INSIDE)
    assert_installed_and_proxying(lab, out)
    # The packaged entry point runs the release's interpreter, with Debian's libraries.
    shebang = lab.path("/usr/bin/v6gen").read_text().splitlines()[0]
    assert shebang == "#!/usr/bin/python3", shebang
    version = lab.run("python3 --version").stdout
    assert version.startswith(VERSIONS[release]["python"]), version
    if seed != SEED:
        assert re.search(rf"warning: docker network {NAT_NET}: .*{NAT_ADDR}", out), out
        assert "com.docker.network.bridge.gateway_mode_ipv6" in out, out
        assert NAT_ADDR not in lab.proxy_entries()
        # What the user is told to run next says the same, and exits with the documented 9.
        diff = lab.v6gen("sync", "--dry-run")
        assert diff.returncode == 9, output(diff)
    else:
        assert lab.v6gen("diff").returncode == 0, "the installed v6gen sees pending changes"

    log = lab.logdir / "dispatcher.log"
    seen = len(log.read_bytes())
    lab.flap()
    assert lab.lan_reachable(PROBE, within=5) is not None, "LAN lost the container after a flap"
    hook = re.compile(rf"Invoking '{HOOK_BASE}/[a-z-]+\.d/50-v6gen' for interface uplink0".encode())
    assert poll(lambda: bool(hook.search(log.read_bytes()[seen:])), 10), log.read_text()[seen:]

    add_foreign_entry(lab)
    apt_local(lab, "purge", "v6gen")
    assert_purged(lab, v6gen_deb, foreign)
    assert_host_untouched(host_before)
