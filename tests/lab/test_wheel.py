"""Issue 24, parts 2 and 3 in one bookworm lab: the wheel `python -m build` makes, installed into
a fresh venv, syncs the lab (templates and the hook from the wheel's own files) and the LAN
reaches seed 000's container; then that install's `doctor` on a host coming from ndppd (the real
ndppd, Debian's package, with a rule covering the address), from someone else's
`IPv6ProxyNDPAddress=` line and from docker-ipv6nat (its chains), each way off followed as
doctor says it with the LAN reaching the container at every step.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from . import packages
from .conftest import MakeLab, checkout_only
from .labhost import REPO, Lab

pytestmark = [pytest.mark.lab, checkout_only("the wheel")]

SEED = Path(__file__).resolve().parent / "compose" / "seed.yml"
PROBE = "2001:db8::a:71a5"
NDPPD_CONF = """# As an ndppd user proxies a container network: a static rule for its subnet.
proxy uplink0 {
    router yes
    rule 2001:db8::a:71a0/125 {
        static
    }
}
"""
FOREIGN = "/etc/systemd/network/10-uplink0.network.d/40-by-hand.conf"
# docker-ipv6nat's chains, as robbertkl/docker-ipv6nat's firewall.go names them (ChainDocker,
# ChainDockerUser, ChainDockerIsolation1/2 in the filter table, ChainDocker in nat). It is a Go
# program that is not in Debian, so its chains are made here with ip6tables, as it makes them;
# bookworm's dockerd 20.10 makes none in ip6tables (its `ip6tables` setting is off).
IPV6NAT_CHAINS = (
    ("filter", "DOCKER"), ("filter", "DOCKER-USER"), ("filter", "DOCKER-ISOLATION-STAGE-1"),
    ("filter", "DOCKER-ISOLATION-STAGE-2"), ("nat", "DOCKER"),
)  # fmt: skip


# The build's tools (Debian's, no index needed) and the daemon doctor is to find: installed when
# missing, as the lab installs its daemons (none of them is started by the install).
PACKAGES = ("python3-build", "python3-hatchling", "python3-venv", "ndppd")


def build_and_install(out: Path) -> Path:
    """`python -m build` (wheel and sdist), the wheel into a fresh venv; its v6gen command.
    Debian's python3-build and python3-hatchling, without isolation: the lab needs no index
    for the build itself (pip then takes the dependencies from the machine's index).
    --skip-dependency-check: hatchling asks for editables, which only an editable install
    uses and Debian 12 does not package."""
    dist = out / "dist"
    subprocess.run(
        [
            "/usr/bin/python3",
            "-m",
            "build",
            "--no-isolation",
            "--skip-dependency-check",
            "--outdir",
            str(dist),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheels = sorted(dist.glob("v6gen-*-py3-none-any.whl"))
    assert len(wheels) == 1 and len(sorted(dist.glob("v6gen-*.tar.gz"))) == 1, sorted(
        dist.iterdir()
    )
    venv = out / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", str(wheels[0])],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return venv / "bin" / "v6gen"


def run(lab: Lab, v6gen: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # From /: nothing of the checkout on the module path.
    return lab.run(
        ["env", "-u", "DOCKER_HOST", "-u", "PYTHONPATH", "-C", "/", str(v6gen), *args],
        check=False,
        timeout=120,
    )


def doctor(lab: Lab, v6gen: Path) -> dict[str, dict[str, Any]]:
    res = run(lab, v6gen, "doctor", "--json")
    rows = json.loads(res.stdout)
    return {r["name"]: r for r in rows if r["name"].startswith("migrate ")}


def test_wheel_sync_then_doctor_migrations(make_lab: MakeLab, tmp_path: Path) -> None:
    packages.ensure_packages(PACKAGES)
    v6gen = build_and_install(tmp_path)
    module = subprocess.run(
        [str(v6gen.parent / "python"), "-c", "import v6gen; print(v6gen.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout
    assert module.startswith(str(tmp_path / "venv")), module
    lab = make_lab()
    lab.compose_up(SEED)

    # Coming from ndppd: it answers for the address (with forwarding on, as its users set it).
    lab.write("/etc/ndppd.conf", NDPPD_CONF)
    lab.run("sysctl -qw net.ipv6.conf.all.forwarding=1")
    lab.host.spawn("ndppd", ["ndppd", "-c", "/etc/ndppd.conf"])
    assert lab.lan_reachable(PROBE, within=30) is not None, lab.logs()
    found = doctor(lab, v6gen)["migrate ndppd"]
    assert (
        found["level"] == "warn" and "2001:db8::a:71a0/125 (static) on uplink0" in found["message"]
    )
    assert found["hint"].startswith("1. `v6gen sync`"), found

    # Step 1: the wheel's sync, beside ndppd.
    res = run(lab, v6gen, "sync")
    assert res.returncode == 0, res.stdout + res.stderr
    assert lab.proxy_entries() == {PROBE}
    assert lab.lan_ping(PROBE)
    wheel_hook = next((tmp_path / "venv").glob("lib/python3*/site-packages/v6gen/dispatcher-hooks"))
    assert lab.path("/etc/networkd-dispatcher/carrier.d/50-v6gen").read_bytes() == (
        (wheel_hook / "50-v6gen").read_bytes()
    )
    assert doctor(lab, v6gen)["migrate ndppd"]["hint"].startswith("1. done")
    # Step 3: ndppd goes; the kernel's entry answers on its own.
    lab.host.stop_proc("ndppd")
    assert lab.lan_reachable(PROBE, within=10) is not None
    assert "migrate ndppd" not in doctor(lab, v6gen)

    # Someone else's line for the same address, in a drop-in of their own.
    lab.write(FOREIGN, f"[Network]\nIPv6ProxyNDPAddress={PROBE}\n")
    lab.networkctl_reload()
    found = doctor(lab, v6gen)["migrate proxy lines"]
    assert FOREIGN in found["message"] and PROBE in found["message"], found
    lab.path(FOREIGN).unlink()
    lab.networkctl_reload()
    lab.wait_configured("uplink0")
    assert lab.proxy_entries() == {PROBE} and lab.lan_ping(PROBE)
    assert "migrate proxy lines" not in doctor(lab, v6gen)

    # docker-ipv6nat's chains.
    for table, chain in IPV6NAT_CHAINS:
        lab.run(f"ip6tables -t {table} -N {chain}")
    found = doctor(lab, v6gen)["migrate docker-ipv6nat"]
    assert (
        "filter DOCKER-ISOLATION-STAGE-1" in found["message"] and "nat DOCKER" in found["message"]
    )
    assert found["hint"].startswith("1. give each container a public address"), found
    print(f"python {sys.version_info[:2]}, ", found["message"])
