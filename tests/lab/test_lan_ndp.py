"""Issue 13: what a real LAN neighbour sees, beyond its first ping.

1. Unicast NUD probes. A LAN host that knows the container's address re-checks it with
   neighbour solicitations sent to the address itself; the kernel answers those for a proxied
   address only with net.ipv6.conf.all.proxy_ndp on. The neighbour's own state machine is the
   ground truth, read from `ip -6 monitor neigh` in its namespace (every transition the kernel
   announces, in order, so nothing depends on how often anyone polls).
2. macvlan: the container sits on the LAN itself and answers Neighbour Discovery on its own;
   v6gen must leave it alone.
3. The hook's trust chain: a state directory that is too open is tightened by sync, one owned
   by someone else is refused before anything changes.
4. ipvlan, which this machine's kernel lacks (vm.py): in L2 mode the container answers for
   itself; in L3/L3S only a proxy entry on the parent (or a route on the LAN side) reaches it.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from . import vm
from .conftest import MakeLab
from .image import IMAGE
from .labhost import Lab, poll
from .nsproc import Namespace
from .test_scenarios import sync
from .topology import Uplink

pytestmark = pytest.mark.lab

SEED = Path(__file__).resolve().parent / "compose" / "seed.yml"
PROBE = "2001:db8::a:71a5"
LAN_IF = Uplink.lan_if
DROPIN = "/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf"
RESTORE = "/var/lib/v6gen/uplinks/uplink0.proxy"
STATE_DIR = "/var/lib/v6gen"
# The neighbour's NUD timing for the probe tests. Reachable for 0.25-0.75 s, then one second in
# DELAY before the unicast probes; these are one second apart (the lab's 100 ms would give the
# host only 0.3 s to answer all three), so "unanswered" means three full seconds of silence.
NUD_SYSCTLS = {
    "base_reachable_time_ms": 500,
    "delay_first_probe_time": 1,
    "retrans_time_ms": 1000,
    "ucast_solicit": 3,
    "app_solicit": 0,
    "mcast_resolicit": 0,
}
# Any address in the LAN's /64 that nobody has: an entry for it tells that the monitor listens.
SENTINEL = "2001:db8::5e:1"


class NeighMonitor:
    """`ip -6 monitor neigh` on the neighbour's LAN interface, its output in the lab's logs."""

    def __init__(self, lab: Lab) -> None:
        self.lan: Namespace = lab.lan()
        self.log = lab.logdir / "lan-neigh-monitor.log"
        self.lan.spawn("lan-neigh-monitor", f"ip -6 monitor neigh dev {LAN_IF}")

        # The monitor subscribes some time after it starts: make and drop an entry for that
        # purpose until it reports one, so no later transition can be missed.
        def listening() -> bool:
            self.lan.run(
                f"ip -6 neigh replace {SENTINEL} lladdr 02:00:00:00:5e:01 dev {LAN_IF}"
                f" && ip -6 neigh del {SENTINEL} dev {LAN_IF}"
            )
            return SENTINEL in self.log.read_text()

        assert poll(listening, 30, interval=0.1), "ip monitor never reported"

    def states(self, addr: str) -> list[str]:
        """The states announced for addr so far, oldest first ("DELETED" for a removal)."""
        out = []
        # Only whole lines: the last one may still be being written.
        for line in self.log.read_text().split("\n")[:-1]:
            words = line.split()
            if "Deleted" in words[:1] and addr in words:
                out.append("DELETED")
            elif words[:1] == [addr]:
                out.append(words[-1])
        return out


def nud_outcome(lab: Lab, monitor: NeighMonitor, addr: str, after: int) -> str:
    """How the neighbour's next round of unicast probes for addr (after the first `after` states
    announced) ended: the state that followed PROBE, "REACHABLE" if a probe was answered,
    "FAILED" if none was. Only PROBE sends unicast solicitations (mcast_resolicit=0). An entry
    left STALE gets a ping, which takes it through DELAY into PROBE."""
    lan = lab.lan()

    def following() -> list[str]:
        seen = monitor.states(addr)[after:]
        return seen[seen.index("PROBE") + 1 :] if "PROBE" in seen else []

    def ended() -> bool:
        if following():
            return True
        seen = monitor.states(addr)[after:]
        if "PROBE" not in seen and seen[-1:] == ["STALE"]:
            lan.run(f"/bin/busybox ping -6 -c 1 -W 1 {addr}", check=False, timeout=10)
        return False

    assert poll(ended, 60, interval=0.2), (
        f"no unicast probe of {addr} ended within 60 s: {monitor.states(addr)[after:]}"
    )
    return following()[0]


def probes(lab: Lab, addr: str) -> str:
    """The neighbour entry's probe counter (`ip -s`; reset when it enters PROBE), for the
    record: a FAILED entry may already be gone, collected when the kernel's table is full."""
    out = lab.lan().run(f"ip -s -6 neigh show {addr} dev {LAN_IF}").stdout
    m = re.search(r"probes \d+", out)
    return m.group(0) if m else "entry gone"


def nud_ready(lab: Lab) -> NeighMonitor:
    """The seed's container synced, known to the neighbour (first ping, by multicast), with the
    neighbour's NUD timing short enough to see its unicast probes within seconds."""
    lab.compose_up(SEED)
    sync(lab)
    monitor = NeighMonitor(lab)
    # Before the entry exists: one made earlier keeps the reachable time it started with.
    keys = " ".join(f"net.ipv6.neigh.{LAN_IF}.{k}={v}" for k, v in NUD_SYSCTLS.items())
    lab.lan().run(f"sysctl -qw {keys}")
    assert lab.lan_reachable(PROBE, within=5) is not None, "LAN can't reach it after sync"
    return monitor


def test_unicast_probes_are_answered_after_sync(lab: Lab) -> None:
    monitor = nud_ready(lab)
    # Three rounds: not a lucky one.
    for _ in range(3):
        seen = len(monitor.states(PROBE))
        outcome = nud_outcome(lab, monitor, PROBE, seen)
        assert outcome == "REACHABLE", (
            f"unicast probe unanswered: {monitor.states(PROBE)[seen:]}, {probes(lab, PROBE)}"
        )
        print(f"answered: {monitor.states(PROBE)[seen:]}, {probes(lab, PROBE)}")
    assert "FAILED" not in monitor.states(PROBE)
    assert lab.sysctl("net.ipv6.conf.all.proxy_ndp") == "1"
    assert "net/ipv6/conf/all/proxy_ndp = 1" in lab.read("/etc/sysctl.d/50-v6gen.conf")

    # clean puts back what v6gen found: off, the kernel default in a fresh namespace.
    res = lab.v6gen("clean")
    assert res.returncode == 0, res.stdout + res.stderr
    assert lab.sysctl("net.ipv6.conf.all.proxy_ndp") == "0"


def test_unicast_probes_fail_without_all_proxy_ndp_until_the_hook_sets_it(lab: Lab) -> None:
    """The opposite, with only all/proxy_ndp switched off by hand after sync (the uplink's own
    proxy_ndp and the entry stay): the probes go unanswered and the entry ends FAILED. A link
    flap then runs v6gen's hook, which switches it on again."""
    monitor = nud_ready(lab)
    lab.run("sysctl -qw net.ipv6.conf.all.proxy_ndp=0")
    assert lab.sysctl("net.ipv6.conf.uplink0.proxy_ndp") == "1"
    assert PROBE in lab.proxy_entries()
    seen = len(monitor.states(PROBE))
    assert nud_outcome(lab, monitor, PROBE, seen) == "FAILED", monitor.states(PROBE)[seen:]
    print(f"unanswered: {monitor.states(PROBE)[seen:]}, {probes(lab, PROBE)}")
    # Multicast resolution still works (the uplink's proxy_ndp): only re-checks fail.
    assert lab.lan_reachable(PROBE, within=5) is not None

    log = lab.logdir / "dispatcher.log"
    before = len(log.read_bytes())
    lab.flap()
    assert poll(lambda: b"v6gen-hook: uplink0 " in log.read_bytes()[before:], 10), "no hook ran"
    assert poll(lambda: lab.sysctl("net.ipv6.conf.all.proxy_ndp") == "1", 10)
    assert poll(lambda: PROBE in lab.proxy_entries(), 10)
    assert poll(lambda: lab.lan_ping(PROBE), 10), "LAN can't reach it after the flap"
    seen = len(monitor.states(PROBE))
    assert nud_outcome(lab, monitor, PROBE, seen) == "REACHABLE", monitor.states(PROBE)[seen:]


# ----- macvlan --------------------------------------------------------------------------------
MACVLAN_NET = "lan-mv"
MACVLAN_ADDR = "2001:db8::c:5"


def test_macvlan_container_answers_for_itself(lab: Lab) -> None:
    """A macvlan network on the uplink, as users make them: the LAN's /64 with the LAN's router
    as gateway, the containers' addresses from a range of it (a narrower subnet would leave the
    container no route back to the LAN neighbour). v6gen proxies nothing for it, says why under
    -v, and the LAN reaches the container at the container's own MAC address."""
    lab.run(
        f"docker network create -d macvlan -o parent=uplink0 --ipv6 --subnet 2001:db8::/64"
        f" --gateway {lab.uplinks[0].lan_addr}"
        f" --ip-range 2001:db8::c:0/124 {MACVLAN_NET}"
    )
    lab.run(
        f"docker run -d --name mv --network {MACVLAN_NET} --ip6 {MACVLAN_ADDR} {IMAGE}"
        " sleep infinity"
    )
    nets = lab.docker.get_json("/containers/mv/json")["NetworkSettings"]["Networks"]
    mac = nets[MACVLAN_NET]["MacAddress"]

    out = sync(lab, "-v")
    assert MACVLAN_ADDR not in lab.proxy_entries(), "v6gen proxies a macvlan container"
    assert (
        f"skipped {MACVLAN_ADDR} (mv, {MACVLAN_NET}): macvlan network: the container is on the"
        " LAN itself and answers Neighbour Discovery for its own address" in out
    ), out
    restore = lab.path(RESTORE)
    assert not restore.exists() or MACVLAN_ADDR not in restore.read_text()
    dropin = lab.path(DROPIN)
    assert not dropin.exists() or MACVLAN_ADDR not in dropin.read_text()

    took = lab.lan_reachable(MACVLAN_ADDR, within=5)
    assert took is not None, "LAN can't reach the macvlan container"
    entry = lab.lan().run(f"ip -6 neigh show {MACVLAN_ADDR} dev {LAN_IF}").stdout
    assert f"lladdr {mac} " in entry, f"not the container's own answer: {entry!r} (its MAC {mac})"
    print(f"macvlan container reached in {took * 1000:.0f} ms, neighbour entry {entry.strip()}")


# ----- the state directory's trust -----------------------------------------------------------
def mode_of(lab: Lab, inside: str) -> int:
    return stat.S_IMODE(lab.path(inside).lstat().st_mode)


def test_too_open_state_dir_is_tightened_and_the_hook_restores(make_lab: MakeLab) -> None:
    """/var/lib/v6gen as a bare tmpfs leaves it (1777) before the first sync. On the 247.3 with
    bug #18378 only the hook brings the entry back after a flap, so the LAN's reach proves the
    hook trusted what sync wrote."""
    lab = make_lab(networkd="247-bug")
    lab.path(STATE_DIR).chmod(0o1777)
    lab.compose_up(SEED)
    log = lab.logdir / "dispatcher.log"
    seen = len(log.read_bytes())
    sync(lab)
    # 247.3 fails a link flapped while it still reconfigures after sync's reload; the hook
    # that runs when the link is configured again is the sign it has finished.
    configured = b"v6gen-hook: uplink0 configured: "
    assert poll(lambda: configured in log.read_bytes()[seen:], 10), "networkd never settled"

    seen = len(log.read_bytes())
    lab.flap()
    restored = re.compile(r"v6gen-hook: uplink0 [a-z-]+: restored 1 proxy entries")

    def hooks_said() -> str:
        return log.read_bytes()[seen:].decode(errors="replace")

    assert poll(lambda: restored.search(hooks_said()) is not None, 10), hooks_said()
    assert "refused" not in hooks_said()
    assert poll(lambda: PROBE in lab.proxy_entries(), 5)
    assert poll(lambda: lab.lan_ping(PROBE), 10), "LAN can't reach the container after the flap"
    assert mode_of(lab, STATE_DIR) == 0o755
    assert mode_of(lab, f"{STATE_DIR}/uplinks") == 0o755
    res = lab.v6gen("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(res.stdout)}
    assert checks["hook data"]["level"] == "ok", checks["hook data"]


def test_state_dir_of_another_owner_is_refused_before_any_change(lab: Lab) -> None:
    lab.run(f"chown 1000:1000 {STATE_DIR}")
    lab.compose_up(SEED)
    res = lab.v6gen("sync")
    said = res.stdout + res.stderr
    assert res.returncode == 7, f"sync exit {res.returncode}\n{said}"
    assert f"{STATE_DIR}: owned by uid 1000, not root" in said, said
    assert PROBE not in lab.proxy_entries()
    assert not lab.path(DROPIN).exists()
    assert not lab.path(RESTORE).exists()
    assert lab.sysctl("net.ipv6.conf.all.proxy_ndp") == "0"
    assert not lab.lan_ping(PROBE)


# ----- ipvlan, in a QEMU guest (vm.py: this machine's kernel has no ipvlan) -----------------
# What Docker's ipvlan driver makes, without Docker: the container's end is an ipvlan link of its
# parent in a namespace of its own, with its address and a default route (L2: via the LAN's
# router, the network being the LAN's /64; L3/L3S: "default dev eth0", as Docker sets it). The
# host side has what v6gen sets on uplink0 when it proxies there: forwarding, proxy_ndp (the
# uplink's and all/), proxy_delay 0. uplink1 is a second NIC, its far end left unconnected.
IPVLAN_SETUP = r"""
H="ip netns exec host"; L="ip netns exec lan"; C="ip netns exec ctr"
setup() { # $1 mode, $2 the container's prefix length, $3 the parent
    for n in host lan ctr; do
        ip netns del $n 2>/dev/null; ip netns add $n
        ip netns exec $n sh -c 'ip link set lo up
            sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0'
    done
    $H ip link add uplink0 type veth peer name eth0 netns lan
    $H ip addr add 2001:db8::1/64 dev uplink0 nodad; $H ip link set uplink0 up
    $H ip link add uplink1 type veth peer name far1; $H ip link set uplink1 up
    $L ip addr add 2001:db8::100/64 dev eth0 nodad; $L ip link set eth0 up
    $L sysctl -qw net.ipv6.neigh.eth0.retrans_time_ms=100 net.ipv6.neigh.eth0.mcast_solicit=50
    $H sysctl -qw net.ipv6.conf.all.forwarding=1 net.ipv6.conf.uplink0.forwarding=1
    $H ip link add link $3 name eth1 type ipvlan mode $1
    $H ip link set eth1 netns ctr
    $C ip addr add 2001:db8::d:5/$2 dev eth1 nodad; $C ip link set eth1 up
    if [ "$1" = l2 ]; then $C ip -6 route add default via 2001:db8::100 dev eth1
    else $C ip -6 route add default dev eth1; fi
    MAC=$($H cat /sys/class/net/uplink0/address)
}
proxy() { # what v6gen does for a proxied address on uplink0
    $H sysctl -qw net.ipv6.conf.uplink0.proxy_ndp=1 net.ipv6.conf.all.proxy_ndp=1 \
        net.ipv6.neigh.uplink0.proxy_delay=0
    $H ip -6 neigh replace proxy 2001:db8::d:5 dev uplink0
}
case_() { # $1 mode, $2 case: one fresh resolution and echo from the LAN neighbour
    $L ip -6 neigh flush dev eth0
    if $L busybox ping -6 -c 1 -W 5 2001:db8::d:5 >/dev/null 2>&1; then p=ok; else p=fail; fi
    e=$($L ip -6 neigh show 2001:db8::d:5 dev eth0)
    m=none; case $e in *lladdr*) m=$(echo "$e" | awk '{print $3}') ;; esac
    [ "$m" = "$MAC" ] && m=uplink0
    echo "RESULT $1 $2 ping=$p lladdr=$m"
}
nud() { # $1 mode, $2 case: how the LAN's first round of unicast probes ends (test_unicast_*)
    $L sysctl -qw net.ipv6.neigh.eth0.base_reachable_time_ms=500 \
        net.ipv6.neigh.eth0.delay_first_probe_time=1 net.ipv6.neigh.eth0.retrans_time_ms=1000 \
        net.ipv6.neigh.eth0.mcast_resolicit=0
    $L ip -6 neigh flush dev eth0
    $L ip -6 monitor neigh dev eth0 >/run/monitor &
    mon=$!
    until grep -q 2001:db8::5e:1 /run/monitor; do
        $L ip -6 neigh replace 2001:db8::5e:1 lladdr 02:00:00:00:5e:01 dev eth0
        $L ip -6 neigh del 2001:db8::5e:1 dev eth0
        sleep 0.1
    done
    $L busybox ping -6 -c 1 -W 5 2001:db8::d:5 >/dev/null 2>&1
    out=none i=0
    while [ $i -lt 300 ]; do # a deadline (60 s), not a measure
        seen=$(awk '$1 == "2001:db8::d:5" { printf "%s ", $NF }' /run/monitor)
        case $seen in
        *"PROBE "?*) rest=${seen#*PROBE }; out=${rest%% *}; break ;;
        *"STALE ") $L busybox ping -6 -c 1 -W 1 2001:db8::d:5 >/dev/null 2>&1 ;;
        esac
        sleep 0.2; i=$((i + 1))
    done
    kill $mon
    echo "RESULT $1 $2 after-probe=$out"
}
"""
IPVLAN_CASES = r"""
setup l2 64 uplink0; case_ l2 alone
for mode in l3 l3s; do
    setup $mode 124 uplink0
    case_ $mode alone
    proxy; case_ $mode proxy
    $H sysctl -qw net.ipv6.conf.all.proxy_ndp=0; nud $mode nud-all-proxy-ndp-off
    $H sysctl -qw net.ipv6.conf.all.forwarding=0 net.ipv6.conf.uplink0.forwarding=0
    case_ $mode proxy-no-forwarding
    setup $mode 124 uplink0
    $L ip -6 route add 2001:db8::d:0/124 via 2001:db8::1; case_ $mode lan-route
    setup $mode 124 uplink1
    proxy; case_ $mode proxy-parent-elsewhere
done
"""


def test_ipvlan_what_a_lan_host_needs(lab_prereqs: None, tmp_path: Path) -> None:
    """L2 (Docker's default ipvlan mode): the container answers Neighbour Discovery itself, so
    v6gen skips it: reachable with no proxy entry (the answer carries the parent's MAC, which
    ipvlan links share). L3 and L3S: no multicast reaches the container, so nothing answers the
    LAN's solicitations; a proxy entry on the parent with v6gen's settings (forwarding on) makes
    it reachable, and so does a route on the LAN side via the host, which v6gen can't make. Once
    resolved, the container answers the LAN's unicast probes itself (ipvlan hands them to it by
    address), all/proxy_ndp or not. A proxy entry on an uplink that is not the network's parent
    answers for the address but leads nowhere: the host has no route into an L3 ipvlan."""
    out = vm.run_script(IPVLAN_SETUP + IPVLAN_CASES, tmp_path)
    results = dict(
        (" ".join(w[1:3]), " ".join(w[3:]))
        for w in (ln.split() for ln in out.splitlines())
        if w[:1] == ["RESULT"]
    )
    print("\n".join(f"{k}: {v}" for k, v in results.items()))
    want = {
        "l2 alone": "ping=ok lladdr=uplink0",
        **{
            f"{mode} {case}": res
            for mode in ("l3", "l3s")
            for case, res in (
                ("alone", "ping=fail lladdr=none"),
                ("proxy", "ping=ok lladdr=uplink0"),
                ("nud-all-proxy-ndp-off", "after-probe=REACHABLE"),
                ("proxy-no-forwarding", "ping=fail lladdr=none"),
                ("lan-route", "ping=ok lladdr=none"),
                ("proxy-parent-elsewhere", "ping=fail lladdr=uplink0"),
            )
        },
    }
    assert results == want, out
