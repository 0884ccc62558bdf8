"""Issue 16: the package, the service and a reboot with systemd as PID 1 (boot.py), on bookworm,
trixie and sid.

One boot per release; its tests run in this order and build on each other, as an administrator's
session would: the boot itself, `apt-get install ./v6gen.deb` with a container already up, the
service (and its sandbox and watchdog), a reboot, a reboot whose uplink has no carrier until the
system is up (Docker before a routable uplink; v6gen ready without one), the purge. sid's
Docker 28 drops what the LAN sends a container on a `nat` network, so its network is `routed`,
as the README tells users.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator

import pytest

from . import packages
from .boot import UPLINK, BootedSystem
from .debpkg import Deb, assert_packaged_hooks
from .labhost import poll
from .nsproc import LabError
from .test_deb import HEADER

pytestmark = pytest.mark.lab

RELEASES = ("bookworm", "trixie", "sid")
VERSIONS = {
    "bookworm": {"systemd": "systemd 252", "docker": "20.10."},
    "trixie": {"systemd": "systemd 257", "docker": "26.1."},
    "sid": {"systemd": "systemd 262", "docker": "28.5."},
}
ROUTED = frozenset({"sid"})
NETWORK, SUBNET = "probe-net", "2001:db8::a:71a0/125"
PROBE = "2001:db8::a:71a5"  # up before v6gen is installed
PENDING = "2001:db8::a:71a4"  # started while nothing syncs, before the service starts
KEEPER = "2001:db8::a:71a3"  # --restart unless-stopped, started under the service
DROPIN = f"/etc/systemd/network/{UPLINK.network_file}.d/50-v6gen.conf"
# Someone else's: a drop-in on the uplink with its own entry, a .network of another link, and a
# kernel entry. The purge must leave all of them.
FOREIGN_DROPIN = f"/etc/systemd/network/{UPLINK.network_file}.d/10-someone-else.conf"
FOREIGN_NETWORK = "/etc/systemd/network/20-foreign.network"
FOREIGN_ENTRIES = frozenset({"2001:db8::beef", "2001:db8::dead"})
GENERATED_DIRS = ("/etc/systemd/network", "/etc/systemd/networkd.conf.d", "/etc/sysctl.d",
                  "/etc/networkd-dispatcher")  # fmt: skip
GONE_AFTER_PURGE = ("/etc/v6gen", "/var/lib/v6gen", "/run/v6gen")
# How a sandbox refusal shows in v6gen's journal: a failed system call, a killed process.
DENIAL = re.compile(
    r"denied|not permitted|Permission denied|EPERM|EACCES|Read-only file system|SIGSYS"
    r"|Bad system call|Traceback",
    re.IGNORECASE,
)
# debian/v6gen.service's hardening as `systemctl show` spells it; the words of list-valued
# properties are compared as sets (systemd orders them its own way).
SANDBOX = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
    "ProtectHostname": "yes", "RestrictNamespaces": "yes", "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "UMask": "0022",
    "CapabilityBoundingSet": "cap_net_admin cap_net_raw", "AmbientCapabilities": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_NETLINK AF_UNIX",
    "SystemCallArchitectures": "native", "MemoryDenyWriteExecute": "yes",
    "ProtectProc": "invisible",
}  # fmt: skip
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13
PROBE_UNIT = "v6gen-sandbox-probe.service"
# The unit's lines that say what runs and how it reports, not how it is confined.
NOT_SANDBOX = ("Type=", "NotifyAccess=", "ExecStart=", "ExecReload=", "Restart", "Watchdog")
# Run under v6gen.service's sandbox: what v6gen does (ip and ip6tables-save, a net.ipv6 sysctl
# written, a drop-in directory written) must work, what it never does must fail.
PROBE_SCRIPT = f"""set -e
ip6tables-save >/dev/null
ip -6 neigh replace proxy 2001:db8::cafe dev {UPLINK.name}
ip -6 neigh del proxy 2001:db8::cafe dev {UPLINK.name}
v=$(cat /proc/sys/net/ipv6/conf/{UPLINK.name}/proxy_ndp)
echo "$v" > /proc/sys/net/ipv6/conf/{UPLINK.name}/proxy_ndp
touch /etc/systemd/network/.v6gen-probe && rm /etc/systemd/network/.v6gen-probe
refused() {{ if "$@" 2>/dev/null; then echo "not refused: $*"; exit 1; fi; }}
refused touch /usr/lib/.v6gen-probe
refused touch /etc/.v6gen-probe
refused ls /root
refused chown 65534 /run/v6gen
refused unshare --net true
refused renice -n -5 -p $$
echo "sandbox probe: all as expected"
"""
WATCHDOG_DROPIN = "/run/systemd/system/v6gen.service.d/50-watchdog-test.conf"
# Generous: these are waits for events, not measurements (bench/ measures).
EVENTUALLY = 60.0

# Per release, what the tests measured; printed when the release's boot is torn down.
MEASURED: dict[str, dict[str, float | str]] = {}


@pytest.fixture(scope="module", params=RELEASES)
def booted(
    request: pytest.FixtureRequest, lab_prereqs: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BootedSystem]:
    release: str = request.param
    packages.ensure_packages(("systemd-container",))
    system = BootedSystem(tmp_path_factory.mktemp(f"boot-{release}"), release)
    system.start()
    MEASURED[release] = {"boot_to_running_s": round(system.boot_seconds[0], 2)}
    try:
        yield system
    finally:
        # In the report's teardown section, where a failure needs it.
        print(f"{release}: measured {MEASURED.get(release)}\n{system.console()}")
        with contextlib.suppress(LabError):
            print(system.run("journalctl --no-pager -b -n 80", check=False, timeout=30).stdout)
        system.stop()


def sandbox_probe(system: BootedSystem) -> subprocess.CompletedProcess[str]:
    """PROBE_SCRIPT as a oneshot unit with v6gen.service's own [Service] sandbox (its lines as
    installed, only what runs and how it reports replaced)."""
    fragment = system.show("v6gen", "FragmentPath")["FragmentPath"]
    unit = system.path(fragment).read_text().split("[Install]")[0]
    keep = [ln for ln in unit.splitlines() if not ln.startswith(NOT_SANDBOX)]
    system.path("/run/v6gen-sandbox-probe.sh").write_text(PROBE_SCRIPT)
    body = "\n".join([*keep, "Type=oneshot", "ExecStart=/bin/sh /run/v6gen-sandbox-probe.sh", ""])
    system.path(f"/run/systemd/system/{PROBE_UNIT}").write_text(body)
    system.run(["systemctl", "daemon-reload"])
    return system.run(["systemctl", "start", PROBE_UNIT], check=False, timeout=120)


def entry_is(system: BootedSystem, addr: str, present: bool) -> bool:
    return (addr in system.proxy_entries()) == present


def v6gen_files(system: BootedSystem) -> list[str]:
    """Files v6gen generated (its name or header) that are still there."""
    found = [d for d in GONE_AFTER_PURGE if system.path(d).exists()]
    for d in GENERATED_DIRS:
        for p in system.path(d).rglob("*"):
            inside = "/" + str(p.relative_to(system.path("/")))
            if p.is_file() and ("v6gen" in p.name or p.read_text(errors="replace")
                                .startswith(HEADER)):  # fmt: skip
                found.append(inside)
    return sorted(found)


# ----- the tests, in order --------------------------------------------------------------------
def test_boot_reaches_running(booted: BootedSystem) -> None:
    """systemd is PID 1 with networkd, dbus and dockerd as units; the uplink is configured and
    the LAN neighbour reaches the host; a container has its address before v6gen exists."""
    system, want = booted, VERSIONS[booted.suite]
    assert system.state == "running", f"{system.state}: failed units {system.failed_units()}"
    assert system.run(["readlink", "/proc/1/exe"]).stdout.strip().endswith("/systemd")
    assert system.run(["systemctl", "--version"]).stdout.startswith(want["systemd"])
    assert system.docker.get_json("/version")["Version"].startswith(want["docker"])
    for unit in ("systemd-networkd", "dbus", "docker", "containerd"):
        assert system.is_active(unit) == "active", unit
    # Enabled, but skipped at boot for want of hooks (ConditionPathExistsGlob=).
    assert system.run(["systemctl", "is-enabled", "networkd-dispatcher"]).stdout.strip() == (
        "enabled"
    )
    assert system.is_active("networkd-dispatcher") == "inactive"
    assert poll(lambda: system.lan_ping(UPLINK.host_addr), EVENTUALLY, interval=0.5)

    system.create_network(NETWORK, SUBNET, routed=system.suite in ROUTED)
    system.start_container("probe", NETWORK, PROBE)
    assert not system.lan_ping(PROBE), "the LAN reaches the container before v6gen"


def test_install_syncs_and_dispatcher_runs_hooks(booted: BootedSystem, v6gen_deb: Deb) -> None:
    """`apt-get install ./v6gen.deb` under systemd: the postinst syncs (the LAN reaches the
    container), the hooks are in place, the postinst starts the idle dispatcher, and after a
    flap the dispatcher runs them."""
    system = booted
    out = system.install_deb(v6gen_deb.path)
    assert "proxying the running containers" in out, out
    assert "starting networkd-dispatcher" in out, out
    status = system.run(["dpkg-query", "-W", "-f=${db:Status-Status}", "v6gen"]).stdout
    assert status == "installed"
    assert PROBE in system.proxy_entries()
    took = system.lan_reachable(PROBE, within=10)
    assert took is not None, "the postinst's sync did not make the container reachable"
    assert_packaged_hooks(system.path)
    assert system.is_active("networkd-dispatcher") == "active"
    assert system.is_active("v6gen") == "inactive", "the package must not start watch mode"

    seen = len(system.journal("-u", "networkd-dispatcher").splitlines())
    system.run(f"ip link set {UPLINK.name} down && ip link set {UPLINK.name} up")

    def hook_restored() -> bool:
        new = system.journal("-u", "networkd-dispatcher").splitlines()[seen:]
        return any(re.search(r"v6gen-hook: uplink0 [a-z-]+: restored 1 proxy entr", ln)
                   for ln in new)  # fmt: skip

    assert poll(hook_restored, EVENTUALLY, interval=0.2), system.journal(
        "-u", "networkd-dispatcher"
    )
    assert poll(lambda: entry_is(system, PROBE, True), EVENTUALLY)
    assert system.lan_reachable(PROBE, within=10) is not None, "not reachable after the flap"
    MEASURED[system.suite]["install_lan_reply_s"] = round(took, 2)


def test_service_ready_after_sync_follows_reloads_sandboxed(booted: BootedSystem) -> None:
    """`systemctl enable --now v6gen`: active only once its first sync is done (Type=notify);
    then it follows Docker; reload resyncs in the same process; the sandbox is applied."""
    system = booted
    system.start_container("pending", NETWORK, PENDING)
    assert PENDING not in system.proxy_entries(), "something synced besides the service"
    # `systemctl start` of a Type=notify unit returns once READY=1 came: the entry must be
    # there at that moment, not eventually.
    system.run(["systemctl", "enable", "--now", "v6gen.service"], timeout=180)
    assert system.is_active("v6gen") == "active"
    assert PENDING in system.proxy_entries(), "READY before the first sync"
    main_pid = system.show("v6gen", "MainPID")["MainPID"]

    system.start_container("keeper", NETWORK, KEEPER, "--restart", "unless-stopped")
    assert poll(lambda: entry_is(system, KEEPER, True), EVENTUALLY), "a new container not proxied"
    assert system.lan_reachable(KEEPER, within=10) is not None
    system.docker_cli("rm", "-f", "pending")
    assert poll(lambda: entry_is(system, PENDING, False), EVENTUALLY), "a removed one kept"

    # Reload: the entry someone deleted comes back from a resync of the same process.
    system.run(["ip", "-6", "neigh", "del", "proxy", PROBE, "dev", UPLINK.name])
    system.run(["systemctl", "reload", "v6gen.service"])
    assert poll(lambda: entry_is(system, PROBE, True), EVENTUALLY), "reload did not resync"
    assert "SIGHUP: full resync" in system.journal("-u", "v6gen")
    assert system.show("v6gen", "MainPID")["MainPID"] == main_pid, "reload restarted it"
    assert system.show("v6gen", "NRestarts")["NRestarts"] == "0"


def test_service_sandbox_applied_and_watchdog(booted: BootedSystem) -> None:
    """The unit's hardening is what systemd applied to the running process; under the same
    sandbox the tools v6gen calls work and what it must not do fails; the journal has no
    denial; the watchdog is fed (a short WatchdogSec= in a drop-in, for the test)."""
    system = booted
    main_pid = system.show("v6gen", "MainPID")["MainPID"]
    shown = system.show("v6gen", *SANDBOX, "SystemCallErrorNumber")
    for prop, want in SANDBOX.items():
        assert set(shown[prop].split()) == set(want.split()), f"{prop}={shown[prop]!r}"
    assert shown["SystemCallErrorNumber"] in ("1", "EPERM"), shown  # EPERM, by number or name
    status = system.path(f"/proc/{main_pid}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2", "no system call filter"
    assert int(fields["CapBnd"], 16) == (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)

    res = sandbox_probe(system)
    assert res.returncode == 0, system.journal("-u", PROBE_UNIT, "-o", "cat")

    journal = system.journal("-b", "-u", "v6gen", "-o", "cat")
    denials = [ln for ln in journal.splitlines() if DENIAL.search(ln)]
    assert not denials, "\n".join(denials)
    security = system.run(["systemd-analyze", "security", "--no-pager", "v6gen.service"],
                          check=False).stdout  # fmt: skip
    score = re.search(r"Overall exposure level for v6gen\.service: (\S+ \S+)", security)
    print(security)
    MEASURED[system.suite]["security_exposure"] = score.group(1) if score else "?"

    # The watchdog: fed every WatchdogSec/2, so with 6 s it pings at least twice in any 9 s;
    # the process stays the same one and systemd never restarts it.
    system.path(WATCHDOG_DROPIN).parent.mkdir(parents=True, exist_ok=True)
    system.path(WATCHDOG_DROPIN).write_text("[Service]\nWatchdogSec=6s\n")
    try:
        system.run("systemctl daemon-reload && systemctl restart v6gen.service", timeout=180)
        pid = system.show("v6gen", "MainPID")["MainPID"]
        pings: set[str] = set()

        def fed_thrice() -> bool:
            pings.add(system.show("v6gen", "WatchdogTimestampMonotonic")[
                "WatchdogTimestampMonotonic"])  # fmt: skip
            return len(pings - {"0"}) >= 3

        assert poll(fed_thrice, EVENTUALLY, interval=0.5), f"watchdog pings seen: {pings}"
        shown = system.show("v6gen", "MainPID", "NRestarts", "ActiveState", "WatchdogUSec")
        assert shown["WatchdogUSec"] == "6s", shown
        assert (shown["MainPID"], shown["NRestarts"], shown["ActiveState"]) == (pid, "0", "active")
    finally:
        system.path(WATCHDOG_DROPIN).unlink()
        system.run("systemctl daemon-reload && systemctl restart v6gen.service", timeout=180)
    assert system.show("v6gen", "WatchdogUSec")["WatchdogUSec"] == "2min"


def test_watch_in_its_sandbox_judges_the_host_firewall(booted: BootedSystem) -> None:
    """v6gen.service's sandbox allows no network namespace, so watch asks v6gen-replay.socket
    (pulled in by the service) for its replays, which v6gen-replay@.service runs in a sandbox
    of its own. The admin's `ip6tables -I FORWARD -j DROP` (no Docker event: watch's rule
    monitor notices) is named in watch's journal with its fix, and its removal too; neither
    unit's journal shows a denial."""
    system = booted
    assert system.is_active("v6gen-replay.socket") == "active"
    seen = len(system.journal("-u", "v6gen", "-o", "cat").splitlines())

    def said(pattern: str) -> bool:
        new = system.journal("-u", "v6gen", "-o", "cat").splitlines()[seen:]
        return any(re.search(pattern, line) for line in new)

    blocked = rf"warning: ip6tables\S* rules keeps the LAN from docker network {NETWORK}: "
    system.run(["ip6tables", "-I", "FORWARD", "-j", "DROP"])
    try:
        assert poll(lambda: said(blocked), EVENTUALLY, interval=0.5), system.journal(
            "-u", "v6gen", "-o", "cat"
        )
        assert said(r"^hint: ip6tables\S* -I FORWARD "), system.journal("-u", "v6gen")
    finally:
        system.run(["ip6tables", "-D", "FORWARD", "-j", "DROP"])
    lifted = rf"ip6tables\S* rules no longer keeps the LAN from docker network {NETWORK}$"
    assert poll(lambda: said(lifted), EVENTUALLY, interval=0.5), system.journal("-u", "v6gen")
    replays = system.journal("-u", "v6gen-replay@*", "-o", "cat")
    watch = system.journal("-u", "v6gen", "-o", "cat").splitlines()[seen:]
    denials = [ln for ln in [*watch, *replays.splitlines()] if DENIAL.search(ln)]
    assert not denials, "\n".join(denials)
    security = system.run(["systemd-analyze", "security", "--no-pager", "v6gen-replay@x.service"],
                          check=False).stdout  # fmt: skip
    score = re.search(r"Overall exposure level for \S+: (\S+ \S+)", security)
    MEASURED[system.suite]["replay_security_exposure"] = score.group(1) if score else "?"
    print(replays, security)


def test_reboot_brings_entry_and_lan_back(booted: BootedSystem) -> None:
    """`systemctl reboot` inside; on the next boot, without any manual step, the entry of the
    `--restart unless-stopped` container is back, the LAN reaches it and diff has nothing."""
    system = booted
    assert system.show("v6gen", "UnitFileState")["UnitFileState"] == "enabled"
    down = system.reboot()

    assert poll(lambda: entry_is(system, KEEPER, True), EVENTUALLY), "entry not back"
    entry_back = system.seconds_since_launch()
    took = system.lan_reachable(KEEPER, within=int(EVENTUALLY))
    assert took is not None, "the LAN does not reach the container after the reboot"
    lan_back = system.seconds_since_launch()
    system.wait_booted()
    assert system.state == "running", f"{system.state}: failed units {system.failed_units()}"
    assert system.is_active("v6gen") == "active"
    assert PROBE not in system.proxy_entries() or poll(
        lambda: entry_is(system, PROBE, False), EVENTUALLY
    ), "the seed container (no restart policy) is down but still proxied"
    diff = system.run(["v6gen", "diff"], check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    MEASURED[system.suite].update(
        shutdown_s=round(down, 2), reboot_boot_to_running_s=round(system.boot_seconds[-1], 2),
        reboot_entry_back_s=round(entry_back, 2), reboot_lan_reply_s=round(lan_back, 2),
    )  # fmt: skip


def test_boot_without_carrier_then_uplink_comes_up(booted: BootedSystem) -> None:
    """A boot whose uplink has no carrier: the boot completes, v6gen becomes ready and keeps what
    it had, Docker runs the container before the uplink is routable; once the carrier comes,
    the LAN reaches the container without any manual step."""
    system = booted
    dropin = system.path(DROPIN).read_text()
    system.reboot(carrier=False)
    assert system.wait_booted() == "running", f"failed units {system.failed_units()}"
    assert system.is_active("v6gen") == "active", "not ready without the uplink"
    assert system.is_active("docker") == "active"
    state = system.run(["networkctl", "status", UPLINK.name], check=False).stdout
    assert "routable" not in state, state
    running = system.docker_cli("inspect", "-f", "{{.State.Running}}", "keeper")
    assert running == "true", "the container is up before the uplink"
    assert system.path(DROPIN).read_text() == dropin, "v6gen changed its drop-in without uplink"
    assert not system.lan_ping(KEEPER)

    system.set_carrier(True)
    took = system.lan_reachable(KEEPER, within=int(EVENTUALLY))
    assert took is not None, "the LAN does not reach the container once the uplink is up"
    assert KEEPER in system.proxy_entries()
    assert poll(lambda: system.run(["v6gen", "diff"], check=False).returncode == 0, EVENTUALLY)
    MEASURED[system.suite]["carrier_to_lan_reply_s"] = round(took, 2)


def test_purge_removes_everything_v6gen_made(booted: BootedSystem) -> None:
    """`apt-get purge v6gen` stops and disables the service, removes its files, generated
    files and kernel entries, and leaves someone else's entry and .network files."""
    system = booted
    foreign_files = {
        FOREIGN_DROPIN: "[Network]\nIPv6ProxyNDPAddress=2001:db8::beef\n",
        FOREIGN_NETWORK: "[Match]\nName=foreign0\n\n[Network]\nIPv6AcceptRA=no\n",
    }
    for name, text in foreign_files.items():
        system.path(name).parent.mkdir(parents=True, exist_ok=True)
        system.path(name).write_text(text)
    system.run(["networkctl", "reload"])
    system.run(["ip", "-6", "neigh", "replace", "proxy", "2001:db8::dead", "dev", UPLINK.name])
    assert poll(lambda: system.proxy_entries() >= FOREIGN_ENTRIES, EVENTUALLY)
    assert system.path(DROPIN).exists()
    listed = system.run(["dpkg-query", "-L", "v6gen"]).stdout.split()
    package_files = [f for f in listed if not system.path(f).is_dir()]

    res = system.run(["apt-get", "purge", "-y", "-q", "v6gen"], timeout=300)
    out = res.stdout + res.stderr
    assert system.is_active("v6gen") in ("inactive", "unknown"), out
    enabled = system.run(["systemctl", "is-enabled", "v6gen.service"], check=False)
    assert enabled.returncode != 0, enabled.stdout
    assert not list(system.path("/etc/systemd/system").rglob("v6gen.service"))
    assert [f for f in package_files if system.path(f).exists()] == []
    assert v6gen_files(system) == []
    assert KEEPER not in system.proxy_entries() and PROBE not in system.proxy_entries()
    assert not system.lan_ping(KEEPER), "still reachable after the purge"
    assert system.proxy_entries() >= FOREIGN_ENTRIES, "someone else's entries went"
    for name, text in foreign_files.items():
        assert system.path(name).read_text() == text, f"{name} changed"
    status = system.run(["dpkg-query", "-W", "-f=${db:Status-Status}", "v6gen"], check=False)
    assert status.returncode != 0 or status.stdout in ("", "not-installed"), status.stdout


def test_rootfs_untouched(booted: BootedSystem) -> None:
    """The boots wrote only into their overlay: the cached tree has no v6gen."""
    assert not (booted.lower / "usr/bin/v6gen").exists()
    assert not (booted.lower / "var/lib/dpkg/info/v6gen.list").exists()
    assert not (booted.lower / "etc/systemd/network" / UPLINK.network_file).exists()
