"""Issue 20: what the LAN reaches with a host firewall on the forward path, measured from the LAN
namespace, and what v6gen says of it, before and after the fix it names.

Bookworm (the machine's Debian 12: docker.io 20.10, which writes no IPv6 rules, networkd 252),
the container at PROBE listening on a published port (80) and an unpublished one (1234):

| gatekeeper (Debian defaults)          | ping | published | unpublished | v6gen says        |
|---------------------------------------|------|-----------|-------------|-------------------|
| none                                  | yes  | yes       | yes         | all               |
| `ufw enable`                          | yes  | no        | no          | icmp, exit 9, ufw |
| ufw + v6gen's `ufw route allow` line  | yes  | yes       | yes         | all               |
| nft `inet filter` forward policy drop | no   | no        | no          | none, exit 9, nft |
| the same + v6gen's two `nft insert rule`s | yes | yes     | yes         | all               |
| firewalld (nftables, zone public)     | no   | no        | no          | none, exit 9, firewalld |
| firewalld + v6gen's zone and policy   | yes  | yes       | yes         | all               |
| the same after dockerd's restart      | yes  | yes       | yes         | all               |
| firewalld before dockerd (zone docker) | no  | no        | no          | none, exit 9, firewalld |
| + v6gen's policy into `docker`      | yes  | yes       | yes         | all, also after a restart |
| ip6tables-legacy FORWARD policy DROP  | no   | no        | no          | none, exit 9      |
| the same + v6gen's two `-I FORWARD`s  | yes  | yes       | yes         | all               |

ufw and firewalld on trixie and sid (their own .debs and the dependencies the cached trees
lack, installed into the lab), and the nftables rows again on trixie (docker.io 26.1, no IPv6
rules either) and on sid with a `routed` network (docker.io 28.5 filters IPv6 itself): there
the fix lets in what Docker lets in, ICMPv6 and the published port, and v6gen says
`published`.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from typing import Any

import pytest

from . import packages, podman, rootfs
from .conftest import MakeLab
from .image import IMAGE
from .labhost import INSTALLED_ENV, Lab, poll
from .watchproc import NotifySocket, WatchProc, start_dockerd, stop_dockerd

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        os.environ.get(INSTALLED_ENV) == "1",
        reason="the package's own tests run the Docker matrix; these need ufw and nftables",
    ),
]

SUBNET = "2001:db8::a:71a0/125"
PROBE = "2001:db8::a:71a5"
PUBLISHED, UNPUBLISHED = 80, 1234
REPLY = "reachable"
CONNECT_WAIT = 3  # generous: only the outcome is asserted, never the time
EXIT_BLOCKED = 9
GATEWAY_MODE = "com.docker.network.bridge.gateway_mode_ipv6"
NFT_POLICY_DROP = """table inet filter {
	chain forward {
		type filter hook forward priority 0; policy drop;
	}
}
"""


FIREWALL_PACKAGES = ("ufw", "nftables", "firewalld")


@pytest.fixture(scope="module", autouse=True)
def _firewall_tools() -> None:
    # The machine's own Debian packages, as the lab installs its daemons (CI starts fresh;
    # maintainer scripts start no service: packages.ensure_packages).
    packages.ensure_packages(FIREWALL_PACKAGES)


def start_firewalld(lab: Lab) -> None:
    """Debian's firewalld with its defaults (nftables backend, default zone public) on the
    lab's own D-Bus, after dockerd, as the issue found it; stopped with the lab."""
    argv = ["firewalld", "--nofork", "--nopid", "--log-target=console"]
    lab.host.spawn("firewalld", argv)

    def running() -> bool:
        return lab.run("firewall-cmd --state", check=False).stdout.strip() == "running"

    assert poll(running, timeout=60), lab.logs()


def probe_container(lab: Lab, mode: str | None = None) -> str:
    """The seed's network (in Docker gateway mode `mode`) and a container listening on a
    published and an unpublished port; returns the bridge's name."""
    opt = f" -o {GATEWAY_MODE}={mode}" if mode else ""
    lab.run(f"docker network create --ipv6 --subnet {SUBNET}{opt} v6net")
    serve = f"nc -ll -p {{}} -e echo {REPLY}"
    script = f"{serve.format(PUBLISHED)} & {serve.format(UNPUBLISHED)}"
    lab.run(
        f"docker run -d --name probe --network v6net --ip6 {PROBE} -p 8080:{PUBLISHED} {IMAGE}"
        f" sh -c {shlex.quote(script)}"
    )
    net_id = lab.run("docker network inspect -f '{{.Id}}' v6net").stdout.strip()
    return f"br-{net_id[:12]}"


def lan_tcp(lab: Lab, port: int) -> bool:
    res = lab.lan().run(
        f"busybox nc -w {CONNECT_WAIT} {PROBE} {port} </dev/null",
        check=False,
        timeout=CONNECT_WAIT + 10,
    )
    return REPLY in res.stdout


def measured(lab: Lab) -> tuple[bool, bool, bool]:
    """(ping, published port, unpublished port) as the LAN neighbour sees them. The ping gets
    three tries: the first solicitation's answer waits up to proxy_delay (0.8 s)."""
    ping = lab.lan_reachable(PROBE, within=3) is not None
    return ping, lan_tcp(lab, PUBLISHED), lan_tcp(lab, UNPUBLISHED)


def _json(lab: Lab, *args: str) -> Any:
    res = lab.v6gen(*args, "--json")
    try:
        return json.loads(res.stdout)
    except ValueError:
        pytest.fail(f"v6gen {' '.join(args)} --json: exit {res.returncode}\n{res.stderr}")


def lan_column(lab: Lab) -> str:
    rows = [r for r in _json(lab, "status") if r.get("address") == PROBE]
    assert len(rows) == 1, rows
    return str(rows[0]["lan_reach"])


def gatekeeper_checks(lab: Lab, name: str) -> list[dict[str, Any]]:
    return [c for c in _json(lab, "doctor") if c.get("name") == f"gatekeeper {name}"]


def fix_line(stderr: str, gatekeeper: str) -> str:
    """The hint under sync's one warning naming the gatekeeper."""
    lines = stderr.splitlines()
    at = [i for i, ln in enumerate(lines) if ln.startswith(f"warning: {gatekeeper} keeps")]
    assert len(at) == 1, f"want one warning naming {gatekeeper}:\n{stderr}"
    hint = lines[at[0] + 1]
    assert hint.startswith("hint: "), stderr
    return hint.removeprefix("hint: ")


def expected_lan(seen: tuple[bool, bool, bool]) -> str:
    """The LAN column that says what the LAN neighbour measured (ping, published port,
    unpublished port): v6gen must say no more and no less."""
    ping, published, unpublished = seen
    if unpublished:
        return "all"
    if published:
        return "published"
    return "icmp" if ping else "none"


def install_release_package(lab: Lab, suite: str, package: str) -> None:
    """The release's own package (the cached trees leave ufw and firewalld out) and what the
    tree lacks of its dependencies, into the lab's overlay root: gone with the lab."""
    names = []
    status = rootfs.path(suite) / "var/lib/dpkg/status"
    for deb in packages.release_debs(suite, (package,), status):
        lab.path(f"/tmp/{deb.name}").write_bytes(deb.read_bytes())
        names.append(f"/tmp/{deb.name}")
    lab.run(f"DEBIAN_FRONTEND=noninteractive dpkg -i {' '.join(names)}", timeout=300)


@pytest.mark.parametrize(
    ("release", "mode"), [("trixie", None), ("sid", "routed")], ids=["trixie", "sid"]
)
def test_ufw_on_other_releases(make_lab: MakeLab, release: str, mode: str | None) -> None:
    """trixie's docker.io 26.1 writes no IPv6 rules, sid's 28.5 does (a `routed` network: its
    default `nat` drops everything itself). Whatever ufw and Docker let through together, v6gen
    says exactly that, names ufw where ufw blocks, and its line gives back what Docker alone
    lets through."""
    lab = make_lab(release=release)
    install_release_package(lab, release, "ufw")
    bridge = probe_container(lab, mode)
    assert lab.v6gen("sync").returncode == 0
    docker_only = measured(lab)
    assert lan_column(lab) == expected_lan(docker_only)

    lab.run("ufw --force enable")
    with_ufw = measured(lab)
    print(f"{release}: Docker alone {docker_only}, with ufw {with_ufw}")
    res = lab.v6gen("sync")
    assert lan_column(lab) == expected_lan(with_ufw), res.stderr
    if with_ufw == docker_only:
        assert "warning: ufw" not in res.stderr, res.stderr
        return
    fix = fix_line(res.stderr, "ufw")
    assert fix == f"ufw route allow in on uplink0 out on {bridge} to {SUBNET}"
    lab.run(fix)
    assert measured(lab) == docker_only, f"after `{fix}`"
    assert lan_column(lab) == expected_lan(docker_only)


def test_ufw_on_bookworm(make_lab: MakeLab) -> None:
    lab = make_lab()
    bridge = probe_container(lab)
    res = lab.v6gen("sync")
    assert res.returncode == 0, res.stderr
    assert measured(lab) == (True, True, True)
    assert lan_column(lab) == "all"

    lab.run("ufw --force enable")
    assert measured(lab) == (True, False, False), "Debian's ufw: ICMPv6 echo only"
    res = lab.v6gen("sync")
    assert res.returncode == EXIT_BLOCKED, f"sync exit {res.returncode}\n{res.stderr}"
    fix = fix_line(res.stderr, "ufw")
    assert fix == f"ufw route allow in on uplink0 out on {bridge} to {SUBNET}"
    assert lan_column(lab) == "icmp"
    checks = gatekeeper_checks(lab, "ufw")
    assert [c["level"] for c in checks] == ["warn"], checks
    assert checks[0]["hint"] == fix

    lab.run(fix)
    assert measured(lab) == (True, True, True), f"after `{fix}`"
    assert lan_column(lab) == "all"
    assert [c["level"] for c in gatekeeper_checks(lab, "ufw")] == ["ok"]
    res = lab.v6gen("sync")
    assert res.returncode == 0, res.stderr
    assert "ufw" not in res.stderr


@dataclass(frozen=True)
class NftRow:
    release: str
    mode: str | None  # Docker's gateway mode: sid's 28.5 in nat (its default) would drop all
    fixed: tuple[bool, bool, bool]  # what the LAN measures once v6gen's fix is in
    lan: str  # what status says then


NFT_ROWS = (
    NftRow("bookworm", None, (True, True, True), "all"),
    NftRow("trixie", None, (True, True, True), "all"),
    # Docker 28's routed mode filters too: after the fix, its own rules decide.
    NftRow("sid", "routed", (True, True, False), "published"),
)


@pytest.mark.parametrize("row", NFT_ROWS, ids=[r.release for r in NFT_ROWS])
def test_nft_forward_policy_drop(make_lab: MakeLab, row: NftRow) -> None:
    lab = make_lab(release=row.release)
    bridge = probe_container(lab, row.mode)
    lab.write("/tmp/policy-drop.nft", NFT_POLICY_DROP)
    lab.run("nft -f /tmp/policy-drop.nft")
    res = lab.v6gen("sync")
    assert measured(lab) == (False, False, False)
    assert res.returncode == EXIT_BLOCKED, f"sync exit {res.returncode}\n{res.stderr}"
    keeper = "nft table inet filter, chain forward"
    fix = fix_line(res.stderr, keeper)
    insert = "nft insert rule inet filter forward"
    rule = (
        f'{insert} iifname "uplink0" oifname "{bridge}" ip6 daddr {SUBNET} accept && '
        f'{insert} iifname "{bridge}" oifname "uplink0" ip6 saddr {SUBNET} '
        "ct state established,related accept"
    )
    assert fix.startswith(rule), fix
    assert lan_column(lab) == "none"
    assert [c["level"] for c in gatekeeper_checks(lab, keeper)] == ["warn"]

    lab.run(rule)
    assert measured(lab) == row.fixed, f"after `{rule}`"
    assert lan_column(lab) == row.lan
    assert [c["level"] for c in gatekeeper_checks(lab, keeper)] == ["ok"]
    assert lab.v6gen("sync").returncode == 0


def test_firewalld_on_bookworm(make_lab: MakeLab) -> None:
    """firewalld started after dockerd (just installed): the bridge is in no zone. v6gen's fix
    puts it where dockerd would, and the LAN still gets through after dockerd restarts with
    firewalld running (a reboot's order), when dockerd binds its bridges to zone `docker`."""
    lab = make_lab()
    bridge = probe_container(lab)
    start_firewalld(lab)
    res = lab.v6gen("sync")
    assert measured(lab) == (False, False, False), "firewalld's default zone: nothing forwarded"
    assert res.returncode == EXIT_BLOCKED, f"sync exit {res.returncode}\n{res.stderr}"
    fix = fix_line(res.stderr, "firewalld")
    assert f"--zone=docker --add-interface={bridge}" in fix, fix
    assert f'destination address="{SUBNET}" accept' in fix, fix
    assert lan_column(lab) == "none"
    assert [c["level"] for c in gatekeeper_checks(lab, "firewalld")] == ["warn"]

    lab.run(fix)
    assert measured(lab) == (True, True, True), f"after `{fix}`"
    assert lan_column(lab) == "all"
    assert [c["level"] for c in gatekeeper_checks(lab, "firewalld")] == ["ok"]
    assert lab.v6gen("sync").returncode == 0
    restart_dockerd_and_probe(lab)
    assert measured(lab) == (True, True, True), "after dockerd's restart"


def test_firewalld_started_before_dockerd(make_lab: MakeLab) -> None:
    """A host that booted with both: dockerd binds the bridge to its zone `docker`. v6gen's fix
    adds a policy into that zone and leaves the binding alone: the fix it gave before (the
    bridge in zone trusted) made dockerd's next start fail to set up the network
    (ZONE_CONFLICT; `docker start` said the network does not exist)."""
    lab = make_lab()
    start_firewalld(lab)
    start_dockerd(lab, stop_dockerd(lab))
    bridge = probe_container(lab)
    zone = lab.run(f"firewall-cmd --get-zone-of-interface={bridge}").stdout.strip()
    assert zone == "docker", "dockerd binds its bridges when firewalld runs at its start"
    res = lab.v6gen("sync")
    assert measured(lab) == (False, False, False)
    assert res.returncode == EXIT_BLOCKED, f"sync exit {res.returncode}\n{res.stderr}"
    fix = fix_line(res.stderr, "firewalld")
    assert "--add-egress-zone=docker" in fix and "--add-interface" not in fix, fix

    lab.run(fix)
    assert measured(lab) == (True, True, True), f"after `{fix}`"
    assert lan_column(lab) == "all"
    restart_dockerd_and_probe(lab)
    assert measured(lab) == (True, True, True), "after dockerd's restart"
    assert lab.v6gen("sync").returncode == 0


def restart_dockerd_and_probe(lab: Lab) -> None:
    """`systemctl restart docker` (no live-restore: the container stops), then the container
    started again; with firewalld running, dockerd binds the bridge to its zone again."""
    start_dockerd(lab, stop_dockerd(lab))
    lab.run("docker start probe")
    assert lab.v6gen("sync").returncode == 0


def test_ip6tables_legacy_policy_drop_on_bookworm(make_lab: MakeLab) -> None:
    """The admin's own rules in iptables-legacy (beside Docker's iptables-nft): a FORWARD
    policy DROP, then the two rules v6gen names."""
    lab = make_lab()
    bridge = probe_container(lab)
    lab.run("ip6tables-legacy -P FORWARD DROP")
    res = lab.v6gen("sync")
    assert measured(lab) == (False, False, False)
    assert res.returncode == EXIT_BLOCKED, f"sync exit {res.returncode}\n{res.stderr}"
    fix = fix_line(res.stderr, "ip6tables-legacy rules")
    assert fix.startswith(
        f"ip6tables-legacy -I FORWARD -i uplink0 -o {bridge} -d {SUBNET} -j ACCEPT && "
    ), fix
    assert lan_column(lab) == "none"

    lab.run(fix)
    assert measured(lab) == (True, True, True), f"after `{fix}`"
    assert lan_column(lab) == "all"
    assert lab.v6gen("sync").returncode == 0


@pytest.mark.parametrize(
    ("release", "mode"), [("trixie", None), ("sid", "routed")], ids=["trixie", "sid"]
)
def test_firewalld_on_other_releases(make_lab: MakeLab, release: str, mode: str | None) -> None:
    """The release's own firewalld (trixie 2.3, sid 2.5) at its defaults, started after
    dockerd; v6gen says what the LAN measures, and its lines give back what Docker alone lets
    through."""
    lab = make_lab(release=release)
    install_release_package(lab, release, "firewalld")
    bridge = probe_container(lab, mode)
    assert lab.v6gen("sync").returncode == 0
    docker_only = measured(lab)

    start_firewalld(lab)
    with_firewalld = measured(lab)
    print(f"{release}: Docker alone {docker_only}, with firewalld {with_firewalld}")
    res = lab.v6gen("sync")
    assert lan_column(lab) == expected_lan(with_firewalld), res.stderr
    if with_firewalld == docker_only:
        assert "warning: firewalld" not in res.stderr, res.stderr
        return
    # Docker's own verdict speaks for its mode: the replay alone would also name Docker, for
    # the port `routed` keeps closed by design, with a fix that advises `routed`.
    assert "warning: Docker" not in res.stderr, res.stderr
    fix = fix_line(res.stderr, "firewalld")
    assert f"--zone=docker --add-interface={bridge}" in fix, fix
    lab.run(fix)
    assert measured(lab) == docker_only, f"after `{fix}`"
    assert lan_column(lab) == expected_lan(docker_only)


def test_netavark2_with_an_nft_forward_drop(make_lab: MakeLab) -> None:
    """Podman 6.1's netavark 2.0 (nftables only, its own `inet netavark` table) on sid: what
    the LAN reaches of a container listening on an unpublished port, as v6gen says it; then
    the admin's nftables forward chain with policy drop on top, named, and its fix."""
    lab = make_lab(release="sid", engine="podman6")
    podman.create_network(lab, "v6pod", SUBNET)
    serve = f"nc -ll -p {{}} -e echo {REPLY}"
    script = f"{serve.format(PUBLISHED)} & {serve.format(UNPUBLISHED)}"
    podman.run_container(lab, "probe", "v6pod", PROBE, ("sh", "-c", script))
    assert lab.v6gen("sync").returncode == 0
    netavark_only = measured(lab)
    print(f"netavark 2.0 alone: {netavark_only}")
    assert "table inet netavark" in lab.run("nft list ruleset").stdout
    assert lan_column(lab) == expected_lan(netavark_only)

    lab.write("/tmp/policy-drop.nft", NFT_POLICY_DROP)
    lab.run("nft -f /tmp/policy-drop.nft")
    res = lab.v6gen("sync")
    assert measured(lab) == (False, False, False)
    assert res.returncode == EXIT_BLOCKED, f"sync exit {res.returncode}\n{res.stderr}"
    fix = fix_line(res.stderr, "nft table inet filter, chain forward")
    assert lan_column(lab) == "none"
    lab.run(fix)  # as printed: its trailing note is a shell comment
    assert measured(lab) == netavark_only, f"after `{fix}`"
    assert lan_column(lab) == expected_lan(netavark_only)


def test_watch_judges_again_when_ufw_changes(make_lab: MakeLab) -> None:
    """`ufw enable` and ufw's fix, with `v6gen watch` running and no Docker event: watch's rule
    monitor (`nft monitor`; ufw is iptables-nft here) asks for a sync, and that sync names ufw
    and its fix; after the fix, watch says ufw no longer blocks, the LAN connects and status
    says `all`. Generous time-outs: only the outcome is asserted."""
    lab = make_lab()
    bridge = probe_container(lab)
    with NotifySocket() as notify, WatchProc(lab, notify=notify) as watch:
        watch.wait_ready()
        assert watch.wait_for("following the host's firewall rules", 10), watch.text()
        mark = watch.mark()
        lab.run("ufw --force enable")
        judged = "the host's firewall rules changed: judging the path again"
        assert watch.wait_for(judged, 30, since=mark), watch.text()
        fix = f"ufw route allow in on uplink0 out on {bridge} to {SUBNET}"
        assert watch.wait_for("warning: ufw keeps", 30, since=mark), watch.text()
        assert watch.wait_for(f"hint: {fix}", 30, since=mark), watch.text()
        assert measured(lab) == (True, False, False)
        assert lan_column(lab) == "icmp"

        mark = watch.mark()
        lab.run(fix)
        assert watch.wait_for(judged, 30, since=mark), watch.text()
        lifted = "ufw no longer keeps the LAN from docker network v6net"
        assert watch.wait_for(lifted, 30, since=mark), watch.text()
        assert measured(lab) == (True, True, True), f"after `{fix}`"
        assert lan_column(lab) == "all"
        assert watch.stop() == 0
    assert watch.count("warning: ufw keeps", since=mark) == 0, watch.text()


def test_watch_judges_again_when_ip6tables_legacy_changes(make_lab: MakeLab) -> None:
    """ip6tables-legacy sends no notification: watch reads its rules every few seconds while
    its module holds a table (rulemonitor.LegacyPoller). The admin's FORWARD policy DROP, then
    ACCEPT again, with watch running and no Docker event."""
    lab = make_lab()
    probe_container(lab)
    lab.run("ip6tables-legacy -L FORWARD -n >/dev/null")  # the module holds its filter table
    with NotifySocket() as notify, WatchProc(lab, notify=notify) as watch:
        watch.wait_ready()
        mark = watch.mark()
        lab.run("ip6tables-legacy -P FORWARD DROP")
        judged = "the host's firewall rules changed: judging the path again"
        assert watch.wait_for(judged, 30, since=mark), watch.text()
        assert watch.wait_for("warning: ip6tables-legacy rules keeps", 30, since=mark), watch.text()
        assert measured(lab) == (False, False, False)

        mark = watch.mark()
        lab.run("ip6tables-legacy -P FORWARD ACCEPT")
        lifted = "ip6tables-legacy rules no longer keeps the LAN from docker network v6net"
        assert watch.wait_for(lifted, 30, since=mark), watch.text()
        assert measured(lab) == (True, True, True)
        assert watch.stop() == 0
