"""The dispatcher hook's trust chain, kept by sync and reported by doctor (v6gen.trust). The
hook tier runs the real hook against trees like these (tests/hooks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from v6gen import doctor, engine, trust
from v6gen.doctor import Level
from v6gen.errors import ApplyError, ExitCode

from fakes import ep
from helpers import Host


@pytest.fixture
def host(tmp_path: Path) -> Host:
    h = Host(tmp_path)
    h.docker.items = [ep()]
    return h


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def hook_data(host: Host) -> doctor.Check:
    [check] = [c for c in doctor.run(host.ctx()) if c.name == "hook data"]
    return check


def test_sync_tightens_its_own_directories(host: Host) -> None:
    state_dir = host.paths.state_dir
    state_dir.mkdir(parents=True)
    state_dir.chmod(0o1777)  # a bare tmpfs mounted there
    out = engine.sync(host.ctx())
    assert out.exit_code == ExitCode.OK and out.changes.chmod == {state_dir: 0o755}
    assert mode(state_dir) == 0o755
    assert hook_data(host).level is Level.OK
    host.paths.restore_dir.chmod(0o775)  # an admin's umask 002
    assert hook_data(host).level is Level.FAIL
    assert engine.sync(host.ctx()).changes.chmod == {host.paths.restore_dir: 0o755}
    assert engine.sync(host.ctx()).changes.empty


def test_a_restore_file_the_hook_would_refuse_is_written_anew(host: Host) -> None:
    engine.sync(host.ctx())
    restore = host.paths.restore_file("uplink0")
    restore.chmod(0o666)
    out = engine.sync(host.ctx())
    assert restore in out.changes.write and mode(restore) == 0o644


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_state_directory_of_someone_else_is_refused_before_any_change(host: Host) -> None:
    state_dir = host.paths.state_dir
    state_dir.mkdir(parents=True)
    os.chown(state_dir, 65534, 65534)
    before = host.snapshot()
    with pytest.raises(ApplyError, match=r"would refuse /var/lib/v6gen: owned by uid 65534"):
        engine.sync(host.ctx())
    assert host.snapshot() == before and host.kernel.proxy == set()
    check = hook_data(host)
    assert check.level is Level.FAIL and "/var/lib/v6gen: owned by uid 65534" in check.message


def test_a_symlinked_state_directory_is_refused(host: Host, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    host.paths.state_dir.parent.mkdir(parents=True)
    host.paths.state_dir.symlink_to(elsewhere)
    with pytest.raises(ApplyError, match="a symlink, not a directory") as err:
        engine.sync(host.ctx())
    assert err.value.exit_code == ExitCode.APPLY
    assert not any(elsewhere.iterdir())


def test_an_open_system_directory_is_refused_not_changed(host: Host) -> None:
    var_lib = host.paths.state_dir.parent
    var_lib.mkdir(parents=True)
    var_lib.chmod(0o777)
    with pytest.raises(ApplyError, match="refuse /var/lib: writable by group or others"):
        engine.sync(host.ctx())
    assert mode(var_lib) == 0o777  # not v6gen's to change


def test_an_open_sysctl_directory_only_costs_proxy_delay(host: Host) -> None:
    sysctl_d = host.paths.sysctl_dropin.parent
    sysctl_d.mkdir(parents=True)
    sysctl_d.chmod(0o777)
    out = engine.sync(host.ctx())
    assert out.exit_code == ExitCode.OK and host.kernel.proxy
    assert any("will not read proxy_delay" in w for w in out.warnings)
    assert [c.level for c in doctor.run(host.ctx()) if c.name == "hook sysctl"] == [Level.WARN]


def test_the_rules_are_the_hooks(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    f.chmod(0o644)
    assert trust.problem(f.lstat(), directory=False, owner=os.geteuid()) == ""
    f.chmod(0o664)
    assert trust.problem(f.lstat(), False, os.geteuid()) == "writable by group or others"
    assert trust.problem(f.lstat(), True, os.geteuid()) == "a regular file, not a directory"
    assert trust.problem(tmp_path.lstat(), False, os.geteuid()) == "a directory, not a regular file"
