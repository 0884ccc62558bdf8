"""Issue 24, part 1: the container image, built by the lab's dockerd from image/Dockerfile, run
as README's compose snippet (read from README.md, so the two cannot drift) on a bookworm lab
host whose networkd has bug #18378: the LAN reaches seed 000's container, the hooks it
installed on the host alone heal a flap, the image reads the host's firewall rules as the
host's tools do, `down` leaves what README says it leaves and `clean` from the image removes it.

One lab for all of it: the image build and the snippet's start are most of its time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from . import imagebase
from .conftest import MakeLab, checkout_only
from .labhost import REPO, Lab, poll

pytestmark = [pytest.mark.lab, checkout_only("the image")]

SEED = Path(__file__).resolve().parent / "compose" / "seed.yml"
PROBE = "2001:db8::a:71a5"
DROPIN = "/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf"
HOOK = REPO / "dispatcher-hooks" / "50-v6gen"
STATES = ("off", "no-carrier", "carrier", "degraded", "routable", "configured")
PROJECT = "v6genimage"
DOCKER = ["env", "-u", "DOCKER_HOST", "docker"]


def readme_snippet() -> str:
    """The indented compose block of README's "Run as a container" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Run as a container\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"(?:^    .*\n|^\n)+", section, re.MULTILINE)
    compose = [b for b in blocks if "services:" in b]
    assert len(compose) == 1, "README's Run as a container section holds one compose block"
    return "\n".join(line[4:] for line in compose[0].splitlines()).strip() + "\n"


def docker(lab: Lab, *args: str, timeout: float = 60) -> str:
    return lab.run([*DOCKER, *args], timeout=timeout).stdout


def hook_runs(lab: Lab) -> list[str]:
    log = lab.logdir / "dispatcher.log"
    return [ln for ln in log.read_text().splitlines() if ln.startswith("v6gen-hook: uplink0")]


def rules(lab: Lab, argv: list[str], container: str | None) -> list[str]:
    """A tool's listing without its comment lines (nft's warnings, the save tools' dates)."""
    cmd = [*DOCKER, "exec", container, *argv] if container else argv
    out = lab.run(cmd).stdout
    return [ln for ln in out.splitlines() if not ln.startswith("#")]


def test_image_snippet_up_flap_down_clean(make_lab: MakeLab, tmp_path: Path) -> None:
    # networkd 247.3 with bug #18378 (test_bug18378.py): it never puts an entry back after a
    # flap, so the entry after one is the hooks' doing alone.
    lab = make_lab(networkd="247-bug")
    lab.docker.import_image(imagebase.build(), imagebase.IMAGE)
    # DOCKER_BUILDKIT=0: the lab has no buildx; dockerd 20.10's own builder reads the Dockerfile.
    lab.run(
        [
            "env", "-u", "DOCKER_HOST", "DOCKER_BUILDKIT=0", "docker", "build", "-q",
            "--build-arg", f"BASE={imagebase.IMAGE}", "-f", str(REPO / "image/Dockerfile"),
            "-t", "v6gen", str(REPO),
        ],
        timeout=600,
    )  # fmt: skip
    lab.compose_up(SEED)
    assert not lab.lan_ping(PROBE), "reachable before v6gen ran: the lab proves nothing"
    # As Debian's networkd-dispatcher ships it (the machine's dpkg lists, which the snippet
    # binds, say so): clean must leave it.
    lab.run("mkdir -m 0755 /etc/networkd-dispatcher/carrier.d")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(readme_snippet())
    lab.compose(compose, "up", "-d", project=PROJECT)
    cid = lab.compose(compose, "ps", "-q", "v6gen", project=PROJECT).split()[-1]

    assert lab.lan_reachable(PROBE, within=60) is not None, lab.logs()
    assert lab.proxy_entries() == {PROBE}
    assert f"={PROBE}" in lab.read(DROPIN)
    shown = lab.run([*DOCKER, "logs", cid])
    logs = shown.stdout + shown.stderr
    assert PROBE in logs, logs

    # The hooks on the host are the project's script, run by the host's dispatcher.
    for state in STATES:
        assert lab.path(f"/etc/networkd-dispatcher/{state}.d/50-v6gen").read_bytes() == (
            HOOK.read_bytes()
        )
    before = len(hook_runs(lab))
    lab.flap()
    assert poll(lambda: any("restored 1 proxy" in ln for ln in hook_runs(lab)[before:]), 30), (
        lab.logs()
    )
    assert lab.proxy_entries() == {PROBE}
    assert lab.lan_reachable(PROBE, within=30) is not None, lab.logs()

    # The image's firewall tools read the host's rules as the host's own do, and its replay
    # (SYS_ADMIN, NET_RAW, the bound /proc/sys) judges them: sync names the drop, exit 9.
    drop = f"FORWARD -d {PROBE} -j DROP"
    lab.run(f"ip6tables -I {drop}")
    for argv in (["nft", "list", "ruleset"], ["ip6tables-save"]):
        assert rules(lab, argv, cid) == rules(lab, argv, None), argv
    judged = lab.run([*DOCKER, "exec", cid, "v6gen", "sync"], check=False)
    assert judged.returncode == 9, judged.stdout + judged.stderr
    assert "ip6tables" in judged.stderr and PROBE in judged.stderr, judged.stderr
    lab.run(f"ip6tables -D {drop}")

    # doctor in the image: the same release as the host's (the machine's bookworm).
    rows = json.loads(docker(lab, "exec", cid, "v6gen", "doctor", "--json"))
    image = next(r for r in rows if r["name"] == "image")
    assert image["level"] == "ok" and "debian bookworm" in image["message"], image

    # The health check, as the image defines it, holds.
    health = json.loads(docker(lab, "image", "inspect", "v6gen"))[0]["Config"]["Healthcheck"]
    assert health["Test"][0] == "CMD"
    lab.run([*DOCKER, "exec", cid, *health["Test"][1:]])

    # Stopped by SIGTERM (exit 0, not a SIGKILL after the grace period) ...
    lab.compose(compose, "stop", project=PROJECT)
    state = json.loads(docker(lab, "inspect", cid))[0]["State"]
    assert (state["Running"], state["ExitCode"]) == (False, 0), state
    lab.compose(compose, "down", project=PROJECT)
    # ... leaving the entries, drop-in, sysctl file and hooks: the LAN still reaches it.
    assert lab.proxy_entries() == {PROBE}
    assert f"={PROBE}" in lab.read(DROPIN)
    assert lab.path("/etc/sysctl.d/50-v6gen.conf").exists()
    assert lab.path("/etc/networkd-dispatcher/carrier.d/50-v6gen").exists()
    assert lab.lan_reachable(PROBE, within=10) is not None

    # `clean` from the image removes all of it.
    lab.compose(compose, "run", "--rm", "v6gen", "clean", project=PROJECT)
    assert lab.proxy_entries() == set()
    assert not lab.path(DROPIN).exists()
    assert not lab.path("/etc/sysctl.d/50-v6gen.conf").exists()
    assert not any(lab.path(f"/etc/networkd-dispatcher/{s}.d/50-v6gen").exists() for s in STATES)
    assert lab.path("/etc/networkd-dispatcher/carrier.d").is_dir()
    assert not lab.path("/etc/networkd-dispatcher/configured.d").exists()
    assert not lab.lan_ping(PROBE)
