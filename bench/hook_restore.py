"""hook_restore_1000_ms vs seed_loop_1000_ms: re-adding 1,000 proxy entries after a link flap.

A private network + mount namespace holds a veth pair (uplink0/peer0). Fresh tmpfs over
/var/lib, /etc/sysctl.d and /run give the hook its fixed input paths (it has no override by
design); the restore file and sysctl.d file are rendered by v6gen's own templates, exactly what
`v6gen sync` writes. Each trial flaps uplink0 (the kernel flushes its proxy entries), checks the
table is empty, then starts the hook as networkd-dispatcher would (empty environment plus IFACE,
STATE, ...; no arguments) and polls the kernel over rtnetlink for the last of the 1,000 entries
(a one-entry lookup, so the poll takes neither a CPU nor the neighbour table's lock from the
hook, as dumping 1,000 entries every half millisecond did), then checks the whole table. The
seed recipe is one `ip -6 neigh add proxy` process per address in a shell loop.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from ipaddress import IPv6Address
from pathlib import Path, PurePosixPath

from .common import ProxyTable, Section, ifindex, log, median, nsenter, rnd, summary, timed_run

N = 1000
HOOK_TRIALS = 15
SEED_TRIALS = 5
UPLINK = "uplink0"
HOOK_PATH = "/run/bench/50-v6gen"
ADDR_FILE = "/run/bench/addresses"
DATA_FILE = f"/var/lib/v6gen/uplinks/{UPLINK}.proxy"  # the fixed path the hook reads
SELF_MS = re.compile(r"restored (\d+) proxy entries in ([0-9.]+) ms(.*)")
SETUP = f"""
set -e
mount -t tmpfs -o mode=755 bench-varlib /var/lib
mount -t tmpfs -o mode=755 bench-sysctl /etc/sysctl.d
mount -t tmpfs -o mode=755 bench-run /run
mkdir -p -m 755 /var/lib/v6gen /var/lib/v6gen/uplinks /run/bench /run/v6gen
ip link set lo up
ip link add {UPLINK} type veth peer name peer0
ip link set {UPLINK} up
ip link set peer0 up
"""


def addresses(n: int = N) -> list[str]:
    base = int(IPv6Address("2001:db8::1:0"))
    return [str(IPv6Address(base + i)) for i in range(1, n + 1)]


def restore_files(addrs: list[str]) -> dict[str, str]:
    """The restore file and sysctl.d file `v6gen sync` would write, from the real templates."""
    from v6gen import render
    from v6gen.model import Forwarding, Owner, Plan, ProxyEntry, UplinkPlan
    from v6gen.paths import Paths

    entries = tuple(ProxyEntry(IPv6Address(a), (Owner("c", "n"),)) for a in addrs)
    plan = Plan(
        (UplinkPlan(UPLINK, PurePosixPath(f"10-{UPLINK}.network"), entries, False),),
        Forwarding.SYSCTL_ONLY,
        proxy_delay=0,
    )
    paths = Paths(Path("/"))
    files = render.render(plan, paths)
    return {
        DATA_FILE: files[paths.restore_file(UPLINK)],
        "/etc/sysctl.d/50-v6gen.conf": files[paths.sysctl_dropin],
    }


def _wait_all(table: ProxyTable, idx: int, addrs: list[str], deadline: float) -> float | None:
    """perf_counter() when all of addrs are in the kernel: the hook's one `ip -batch` adds them
    in file order, so poll (cheaply) for the last one, then check the whole table once."""
    while not table.present(idx, addrs[-1]):
        if time.perf_counter() > deadline:
            return None
        time.sleep(0.0002)
    seen = time.perf_counter()
    if table.count(idx) >= len(addrs):
        return seen
    return table.wait(  # not in order after all: fall back to whole-table dumps
        lambda e: sum(1 for i, _ in e if i == idx) >= len(addrs),
        timeout=max(0.0, deadline - time.perf_counter()),
    )


def run(workdir: Path) -> Section:
    from tests.lab.nsproc import Namespace

    from v6gen.hooks import hook_source

    sec = Section()
    ns = Namespace(workdir, "hookbench")
    ns.start()
    try:
        ns.run(SETUP)
        root = Path(f"/proc/{ns.pid}/root")
        addrs = addresses()
        for inside, text in restore_files(addrs).items():
            p = root / inside.lstrip("/")
            p.write_text(text)
            p.chmod(0o644)
        hook = root / HOOK_PATH.lstrip("/")
        shutil.copyfile(hook_source(), hook)
        hook.chmod(0o755)
        (root / ADDR_FILE.lstrip("/")).write_text("\n".join(addrs) + "\n")
        idx = ifindex(ns.pid, UPLINK)
        enter = nsenter(ns.pid)

        def flap() -> None:
            subprocess.run(
                [*enter, "sh", "-c", f"ip link set {UPLINK} down && ip link set {UPLINK} up"],
                check=True, timeout=10,
            )  # fmt: skip

        # What starting any process in the namespace costs (part of every trial below, as
        # forking the hook is part of networkd-dispatcher's run).
        spawn = [timed_run([*enter, "/bin/true"], bound=10)[1] * 1000 for _ in range(10)]

        # networkd-dispatcher execs the hook with this environment (nsenter passes it on); an
        # `env -i` in between would time one more exec than the dispatcher makes.
        hook_env = {
            "IFACE": UPLINK, "STATE": "carrier", "AdministrativeState": "configured",
            "OperationalState": "carrier",
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }  # fmt: skip
        hook_argv = [*enter, HOOK_PATH]
        # The floor: the same file fed to one bare `ip -batch` (the hook's checks stripped off).
        floor_argv = [*enter, "ip", "-6", "-force", "-batch", DATA_FILE]
        hook_present, hook_exit, hook_self, floor = [], [], [], []
        hook_notes: set[str] = set()
        with ProxyTable(ns.pid) as table:

            def trial(
                argv: list[str], name: str, env: dict[str, str] | None = None
            ) -> tuple[float, float, str]:
                """(ms to all present, ms to exit, stderr) of one run after a flap."""
                flap()
                assert table.count(idx) == 0, "the flap left proxy entries behind"
                exited: list[float] = []
                t0 = time.perf_counter()
                proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)

                def reap(p: subprocess.Popen[str] = proc, out: list[float] = exited) -> None:
                    p.wait()
                    out.append(time.perf_counter())

                waiter = threading.Thread(target=reap)
                waiter.start()
                t_all = _wait_all(table, idx, addrs, t0 + 15)
                waiter.join(timeout=20)
                err = proc.stderr.read() if proc.stderr else ""
                if t_all is None or not exited:
                    raise RuntimeError(f"{name}: entries not restored; stderr {err!r}")
                if proc.returncode != 0:
                    raise RuntimeError(f"{name}: exit {proc.returncode}; stderr {err!r}")
                return (t_all - t0) * 1000, (exited[0] - t0) * 1000, err

            for n in range(HOOK_TRIALS):  # interleaved, so drift hits both alike
                present, exit_ms, err = trial(hook_argv, f"hook trial {n}", hook_env)
                hook_present.append(present)
                hook_exit.append(exit_ms)
                m = SELF_MS.search(err)
                if not m or int(m.group(1)) != N:
                    raise RuntimeError(f"unexpected hook log line {err!r}")
                if m.group(3).strip():
                    hook_notes.add(m.group(3).strip("; \n"))
                hook_self.append(float(m.group(2)))
                present, _, err = trial(floor_argv, f"ip -batch trial {n}", hook_env)
                if err.strip():
                    raise RuntimeError(f"bare ip -batch complained: {err!r}")
                floor.append(present)
            log(
                f"hook: median {median(hook_present):.1f} ms to all {N} present; "
                f"bare ip -batch {median(floor):.1f} ms"
            )

            seed = []
            loop = f'while read -r a; do ip -6 neigh add proxy "$a" dev {UPLINK}; done'
            loop += f" < {ADDR_FILE}"
            for n in range(SEED_TRIALS):
                flap()
                assert table.count(idx) == 0
                _, took = timed_run([*enter, "sh", "-c", loop], bound=120)
                if table.count(idx) != N:
                    raise RuntimeError(f"seed trial {n}: not all {N} entries present")
                seed.append(took * 1000)
            log(f"seed loop: median {median(seed):.0f} ms")
    finally:
        ns.stop()

    h, s = median(hook_present), median(seed)
    sec.metrics.update(
        hook_restore_1000_ms=rnd(h, 1),
        seed_loop_1000_ms=rnd(s, 0),
        hook_vs_seed_ratio=rnd(s / h, 1),
        hook_restore_1000_min_ms=rnd(min(hook_present), 1),
        hook_restore_1000_exit_ms=rnd(median(hook_exit), 1),
        hook_restore_1000_self_reported_ms=rnd(median(hook_self), 1),
        ip_batch_floor_1000_ms=rnd(median(floor), 1),
        # Trials alternate, so pair each hook trial with the floor trial after it.
        hook_over_ip_batch_ms=rnd(
            median([a - b for a, b in zip(hook_present, floor, strict=True)]), 1
        ),
        process_spawn_overhead_ms=rnd(median(spawn), 2),
    )
    sec.detail.update(
        hook_restore_1000_ms=summary(hook_present, 2),
        hook_restore_1000_exit_ms=summary(hook_exit, 2),
        hook_restore_1000_self_reported_ms=summary(hook_self, 1),
        seed_loop_1000_ms=summary(seed, 1),
        ip_batch_floor_1000_ms=summary(floor, 2),
        process_spawn_overhead_ms=summary(spawn, 2),
    )
    if hook_notes:
        sec.notes.append(f"hook logged: {'; '.join(sorted(hook_notes))}")
    sec.notes.append(
        f"hook: plain netns + veth, real dispatcher-hooks/50-v6gen started like "
        f"networkd-dispatcher does (env IFACE/STATE, via nsenter: ~{median(spawn):.1f} ms "
        f"process start included), timed to all {N} entries seen over rtnetlink; "
        f"median of {HOOK_TRIALS}; seed: median of {SEED_TRIALS}"
    )
    return sec
