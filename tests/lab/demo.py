"""`make demo`: scenario 1 of the lab, narrated. Root only.

    python -m tests.lab.demo

Brings up the lab, starts the seed's compose file, shows that the LAN neighbour can't reach the
container, runs `v6gen sync`, shows what it wrote and the kernel's proxy table, shows that the
neighbour now reaches the container, and tears everything down. The last line starts with
`demo: OK`, or `demo: FAILED` with the reason (and a non-zero exit).
"""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
from pathlib import Path

from . import packages
from .labhost import Lab
from .nsproc import LabError

SEED = Path(__file__).resolve().parent / "compose" / "seed.yml"
PROBE = "2001:db8::a:71a5"
DROPIN = "/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf"


class DemoFailed(Exception):
    pass


def step(title: str, body: str = "") -> None:
    print(f"\n== {title}")
    if body.strip():
        print(textwrap.indent(body.rstrip(), "   "))


def run_demo(lab: Lab) -> None:
    step(
        f"lab up in {lab.bringup_seconds:.1f}s",
        "host namespace: systemd-networkd 252, networkd-dispatcher, dockerd\n"
        "uplink0 2001:db8::1/64  <->  LAN neighbour 2001:db8::100/64 (its own namespace)",
    )
    lab.compose_up(SEED)
    for c in lab.docker.get_json("/containers/json"):
        nets = c["NetworkSettings"]["Networks"]
        addrs = ", ".join(f"{n}: {v['GlobalIPv6Address']}" for n, v in nets.items())
        step("container", f"{c['Names'][0].lstrip('/')}  {addrs}")

    if lab.lan_ping(PROBE):
        raise DemoFailed(f"the LAN reached {PROBE} before v6gen sync: the lab proves nothing")
    step(f"LAN neighbour pings {PROBE} before sync", "no reply (nothing proxies it yet)")

    res = lab.v6gen("sync")
    step(f"v6gen sync (exit {res.returncode})", res.stdout + res.stderr)
    if res.returncode != 0:
        raise DemoFailed(f"v6gen sync exited {res.returncode}: {res.stderr.strip()}")
    if not lab.path(DROPIN).exists():
        raise DemoFailed(f"v6gen sync wrote no {DROPIN}")
    step(DROPIN, lab.read(DROPIN))
    step("ip -6 neigh show proxy", lab.run("ip -6 neigh show proxy").stdout or "(empty)")

    took = lab.lan_reachable(PROBE, within=3)
    if took is None:
        raise DemoFailed(f"the LAN still can't reach {PROBE} after v6gen sync")
    step(f"LAN neighbour pings {PROBE} after sync", f"reply after {took * 1000:.0f} ms")


def main() -> int:
    if os.geteuid() != 0:
        print(
            "demo: FAILED: needs root (network namespaces, dockerd, networkd); try sudo make demo"
        )
        return 1
    try:
        packages.ensure_packages()
        with tempfile.TemporaryDirectory(prefix="v6gen-demo-") as tmp:
            lab = Lab(Path(tmp))
            try:
                lab.start()
                run_demo(lab)
            except (DemoFailed, LabError):
                print("\n" + lab.logs(tail=15), file=sys.stderr)
                raise
            finally:
                lab.stop()
        step("lab torn down")
    except (DemoFailed, LabError, OSError) as exc:
        print(f"demo: FAILED: {exc}")
        return 1
    print(f"demo: OK - the LAN neighbour reached {PROBE} only after `v6gen sync`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
