"""Capture what dockerd says and does about IPv6 filtering, per Debian release (root only).

    python -m tests.lab.capture_firewall [--out DIR] [RELEASE ...]

For each release (bookworm: the machine's own docker.io; trixie and sid: their root filesystems,
see release.py) a lab runs dockerd exactly as a user does, all its flags at their defaults but
the paths and cgroup parent, creates IPv6 bridge networks shaped like the seed's (a /125 inside
the uplink's 2001:db8::/64), one container with a static address on each, and saves the raw API
bodies and the firewall rules in force into DIR/<release>-<docker version>/, with a README.md
that says how. Networks whose gateway mode the daemon does not know (before 27.0) are left out.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import packages
from .image import IMAGE
from .labhost import REPO, Lab, LabOptions
from .release import RELEASES

GATEWAY_MODE = "com.docker.network.bridge.gateway_mode_ipv6"


@dataclass(frozen=True)
class Net:
    name: str
    subnet: str
    container: str
    address: str
    options: tuple[tuple[str, str], ...] = ()
    internal: bool = False
    publish: bool = False  # -p 8080:80
    min_docker: int = 0  # major version that knows the options


NETS = (
    Net("v6nat", "2001:db8::a:71a0/125", "probe-nat", "2001:db8::a:71a5", publish=True),
    Net("v6routed", "2001:db8::a:71a8/125", "probe-routed", "2001:db8::a:71ad",
        options=((GATEWAY_MODE, "routed"),), min_docker=27),
    Net("v6unprot", "2001:db8::a:71b0/125", "probe-unprot", "2001:db8::a:71b5",
        options=((GATEWAY_MODE, "nat-unprotected"),), min_docker=28),
    Net("v6internal", "2001:db8::a:71b8/125", "probe-internal", "2001:db8::a:71bd",
        internal=True, min_docker=27),
)  # fmt: skip
# The firewall as dockerd left it, each command's full output (run inside the lab, in this
# order: with iptables-nft, `-t TABLE` shows that table's built-in chains even where dockerd made
# none, so the full dumps come first).
RULES = {
    "ip6tables-save.txt": "ip6tables-save",
    "iptables-save.txt": "iptables-save",
    "nft-ruleset.txt": "nft list ruleset",
    "ip6tables-save-raw.txt": "ip6tables-save -t raw",
    "ip6tables-save-filter.txt": "ip6tables-save -t filter",
}
API = {
    "version.json": "/version",
    "info.json": "/info",
    "networks.json": "/networks",
    "containers.json": "/containers/json",
}


def _create(lab: Lab, net: Net) -> None:
    api = lab.docker
    api.call("POST", "/networks/create", {
        "Name": net.name, "EnableIPv6": True, "Internal": net.internal, "CheckDuplicate": True,
        "Options": dict(net.options), "IPAM": {"Config": [{"Subnet": net.subnet}]},
    })  # fmt: skip
    host: dict[str, object] = {"NetworkMode": net.name}
    body: dict[str, object] = {"Image": IMAGE, "Cmd": ["sleep", "1000000"]}
    if net.publish:
        host["PortBindings"] = {"80/tcp": [{"HostPort": "8080"}]}
        body["ExposedPorts"] = {"80/tcp": {}}
    body["HostConfig"] = host
    body["NetworkingConfig"] = {
        "EndpointsConfig": {net.name: {"IPAMConfig": {"IPv6Address": net.address}}}
    }
    api.call("POST", f"/containers/create?name={net.container}", body)
    api.call("POST", f"/containers/{net.container}/start")


def _output(lab: Lab, cmd: str) -> bytes:
    res = lab.run(cmd, check=False)
    if res.returncode != 0:
        return f"# `{cmd}` exited {res.returncode}: {res.stderr.strip()}\n".encode()
    return res.stdout.encode()


def _readme(
    release: str, version: dict[str, str], nets: list[Net], tools: str, args: tuple[str, ...]
) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# dockerd {version['Version']} on Debian {release}: IPv6 networks and firewall",
        "",
        f"Captured {when} by `python -m tests.lab.capture_firewall {release}"
        + "".join(f" --dockerd-arg={a}" for a in args)
        + f"` (root), kernel "
        f"{platform.release()}. dockerd {version['Version']} (API {version['ApiVersion']}) ran "
        + (
            "from the machine's own Debian 12 filesystem"
            if release == "bookworm"
            else f"chrooted in an mmdebstrap'd Debian {release} root filesystem"
            " (tests/lab/rootfs.py)"
        )
        + ", in the lab's private network, mount (and for chroots PID) namespaces, with every "
        "flag at its default except `--data-root=/var/lib/docker --exec-root=/run/docker "
        "-H unix:///run/docker.sock --pidfile=/run/docker.pid --cgroup-parent=<lab's> "
        "--log-level=warn`"
        + (f" and `{' '.join(args)}`" if args else "")
        + ": iptables, ip6tables, the default bridge and the userland proxy as "
        "dockerd decides"
        + (" unless those say otherwise" if args else "")
        + ". The host's uplink0 is 2001:db8::1/64 (systemd-networkd), its LAN "
        "neighbour 2001:db8::100. Firewall tools: " + tools + ".",
        "",
        "Networks (POST /networks/create, EnableIPv6, the subnet given), one container each "
        "(image `v6gen-busybox:lab`, `sleep 1000000`, static IPv6Address):",
        "",
        "| network | subnet | options | container | address |",
        "|---|---|---|---|---|",
    ]
    for n in nets:
        opts = ", ".join(f"`{k}={v}`" for k, v in n.options) + (" Internal" if n.internal else "")
        pub = " (`-p 8080:80`)" if n.publish else ""
        lines.append(f"| {n.name} | {n.subnet} | {opts} | {n.container}{pub} | {n.address} |")
    lines += ["", "| file | what |", "|---|---|"]
    lines += [f"| `{f}` | `GET {p}`, the body as dockerd sent it |" for f, p in API.items()]
    lines += [f"| `{f}` | `{c}` inside the lab, full output |" for f, c in RULES.items()]
    return "\n".join(lines) + "\n"


def capture(release: str, out: Path, dockerd_args: tuple[str, ...] = ()) -> Path:
    with tempfile.TemporaryDirectory(prefix="v6gen-capture-") as tmp:
        opts = LabOptions(release=release, dispatcher=False, dockerd_args=dockerd_args)  # type: ignore[arg-type]
        with Lab(Path(tmp), opts) as lab:
            version = lab.docker.get_json("/version")
            major = int(version["Version"].split(".")[0])
            nets = [n for n in NETS if major >= n.min_docker]
            for net in nets:
                _create(lab, net)
            files = {f: lab.docker.get(p) for f, p in API.items()}
            files |= {f: _output(lab, c) for f, c in RULES.items()}
            tools = lab.run("ip6tables --version; nft --version", check=False).stdout.strip()
            print(f"{release}: bring-up {lab.bringup_seconds:.2f}s {lab.timings}")
    suffix = "".join(f"_{a.lstrip('-').replace('=', '-')}" for a in dockerd_args)
    dest = out / f"{release}-{version['Version'].split('+')[0]}{suffix}"
    dest.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (dest / name).write_bytes(body)
    text = _readme(release, version, nets, tools.replace("\n", ", "), dockerd_args)
    (dest / "README.md").write_text(text)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=REPO / "tests/fixtures/docker/firewall")
    ap.add_argument("releases", nargs="*", default=list(RELEASES))
    ap.add_argument(
        "--dockerd-arg", action="append", default=[], help="one more dockerd flag (repeatable)"
    )
    args = ap.parse_args()
    # nftables: `nft list ruleset` on bookworm too (the chroots have it from rootfs.py).
    packages.ensure_packages((*packages.PACKAGES, "nftables"))
    for release in args.releases:
        print(f"captured {capture(release, args.out, tuple(args.dockerd_arg))}")


if __name__ == "__main__":
    main()
