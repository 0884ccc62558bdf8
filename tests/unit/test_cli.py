from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from v6gen import cli
from v6gen.detect import EngineChoice
from v6gen.engine import Adapters
from v6gen.errors import DockerError

from fakes import ep
from helpers import Host

# click 8.1 (Debian 12) mixes stderr into stdout unless told not to; 8.2 removed the option.
_SEPARATE = "mix_stderr" in inspect.signature(CliRunner.__init__).parameters
_RUNNER_ARGS: dict[str, Any] = {"mix_stderr": False} if _SEPARATE else {}
RUNNER = CliRunner(**_RUNNER_ARGS)


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    h = Host(tmp_path)
    monkeypatch.setattr(
        cli, "_adapters", lambda cfg, paths: Adapters(h.docker, h.networkd, h.kernel)
    )
    return h


def run(host: Host, *args: str) -> tuple[int, str, str]:
    # --root makes the CLI treat the host as offline; tests of live kernel effects live in
    # test_sync.py and the lab. Here: parsing, output and exit codes.
    result = RUNNER.invoke(cli.app, [*args, "--root", str(host.root)])
    return result.exit_code, result.stdout, result.stderr


def test_sync_then_up_to_date(host: Host) -> None:
    host.docker.items = [ep()]
    code, out, _ = run(host, "sync")
    assert code == 0
    assert "write  /etc/systemd/network/10-uplink0.network.d/50-v6gen.conf" in out
    code, out, _ = run(host, "sync")
    assert code == 0 and out.startswith("up to date: 1 address on 1 uplink")


def test_diff_exit_codes(host: Host) -> None:
    host.docker.items = [ep()]
    code, out, _ = run(host, "diff")
    assert code == 1 and "+IPv6ProxyNDPAddress=2001:db8::a:71a5" in out
    assert not host.dropin.exists()
    run(host, "sync")
    assert run(host, "diff")[0] == 0


def test_json_report(host: Host) -> None:
    host.docker.items = [ep()]
    code, out, _ = run(host, "sync", "--json")
    report = json.loads(out)
    assert code == 0 and not report["up_to_date"]
    assert report["uplinks"][0]["addresses"] == [
        {"address": "2001:db8::a:71a5", "containers": ["seed-probe-1"], "lan_reach": "all"}
    ]
    assert "/etc/systemd/network/10-uplink0.network.d/50-v6gen.conf" in report["files_written"]


def test_dry_run_writes_nothing(host: Host) -> None:
    host.docker.items = [ep()]
    before = host.snapshot()
    code, out, _ = run(host, "sync", "--dry-run")
    assert code == 0 and "would write" in out and "--- /dev/null" in out
    assert host.snapshot() == before


def test_docker_error_prints_error_and_hint(host: Host) -> None:
    host.docker.error = DockerError(
        "cannot ask Docker for its containers: refused", "is dockerd running?"
    )
    code, _, err = run(host, "sync")
    assert code == 4
    assert (
        err == "error: cannot ask Docker for its containers: refused\nhint: is dockerd running?\n"
    )


def test_config_error_exit_code(host: Host, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("uplink: eth0\n")
    code, _, err = run(host, "sync", "--config", str(bad))
    assert code == 3
    assert f"error: {bad}:1: unknown key 'uplink'\nhint: did you mean 'uplinks'?" in err


def test_skipped_addresses_are_warned(host: Host) -> None:
    host.docker.items = [ep(address="fe80::1"), ep("b", enable="false")]
    code, _, err = run(host, "sync")
    assert code == 0
    assert (
        "warning: skipped fe80::1 (seed-probe-1, seed_probe-network): address is a link-local"
        in err
    )
    assert "opted out" not in err
    _, _, err = run(host, "sync", "-v")
    assert "note: skipped 2001:db8::a:71a5 (b, seed_probe-network): opted out" in err


def test_status_and_clean(host: Host) -> None:
    host.docker.items = [ep()]
    run(host, "sync")
    code, out, _ = run(host, "status", "--json")
    (row,) = json.loads(out)
    assert row["address"] == "2001:db8::a:71a5" and row["in_dropin"] and row["wanted"]
    code, out, _ = run(host, "clean")
    assert code == 0 and "delete /etc/systemd/network/10-uplink0.network.d/50-v6gen.conf" in out
    assert not host.dropin.exists()


def test_internal_error_is_one_line_without_debug(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("kaputt")

    monkeypatch.setattr("v6gen.engine.sync", boom)
    code, _, err = run(host, "sync")
    assert code == 70 and "internal error: RuntimeError: kaputt" in err and "Traceback" not in err


def test_help_and_version_import_no_heavy_modules() -> None:
    probe = (
        "import sys; sys.argv=['v6gen','--help']\n"
        "from v6gen import cli\n"
        "try: cli.main()\n"
        "except SystemExit: pass\n"
        "heavy = [m for m in ('docker', 'dbus_next', 'jinja2', 'yaml', 'requests')\n"
        "         if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    assert "HEAVY []" in out.stdout
    assert "Exit codes" in out.stdout
    version = subprocess.run(
        [sys.executable, "-m", "v6gen", "--version"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert version.stdout.startswith("v6gen ")


def test_the_engine_asked_is_named_by_v_status_and_json(host: Host) -> None:
    host.docker.items = [ep()]
    host.docker.engine = EngineChoice(
        "unix:///run/podman/podman.sock", "Podman", "found its socket; no Docker here"
    )
    host.docker.version = "5.8.0"
    said = "Podman 5.8.0 at unix:///run/podman/podman.sock (found its socket; no Docker here)"
    _, _, err = run(host, "sync", "-v")
    assert f"note: asked {said}" in err.splitlines()
    _, _, quiet = run(host, "sync")
    assert "note: asked" not in quiet
    _, out, _ = run(host, "sync", "--json")
    assert json.loads(out)["engine"] == {
        "name": "Podman",
        "version": "5.8.0",
        "url": "unix:///run/podman/podman.sock",
        "chosen_by": "found its socket; no Docker here",
        "not_followed": [],
        "rootless_podman": [],
    }
    _, out, err = run(host, "status")
    assert "engine: Podman at unix:///run/podman/podman.sock" in err and "engine" not in out
