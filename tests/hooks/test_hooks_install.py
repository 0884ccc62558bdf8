"""v6gen.hooks: installing the dispatcher hook under etc/ of a scratch root, and removing it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from v6gen import hooks
from v6gen.paths import DISPATCHER_STATES, HOOK_NAME, Paths

FOREIGN = b"#!/bin/sh\necho somebody else's hook\n"


@pytest.fixture
def paths(as_root: None, tmp_path: Path) -> Iterator[Paths]:
    root = tmp_path / "root"
    root.mkdir()
    old = os.umask(0o077)  # a hostile umask must not leak into modes
    try:
        yield Paths(root)
    finally:
        os.umask(old)


def state_dir(paths: Paths, state: str) -> Path:
    return paths.local_hook_base / f"{state}.d"


def assert_0755_root(path: Path, kind: int) -> None:
    st = path.lstat()
    assert stat.S_IFMT(st.st_mode) == kind, path
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0), path


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes | None]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(p.relative_to(root))] = (st.st_ino, st.st_mtime_ns, st.st_mode, data)
    return out


def test_hook_source_is_the_script_with_the_marker() -> None:
    source = hooks.hook_source()
    lines = source.read_text().splitlines()
    assert lines[0] == "#!/bin/sh"
    assert lines[1].startswith(hooks.MARKER)
    assert hooks.is_ours(source)


def test_install_puts_the_hook_in_every_state_dir_0755_root(paths: Paths) -> None:
    written = hooks.install(paths)

    assert written == hooks.local_hooks(paths)
    assert [p.parent.name for p in written] == [f"{s}.d" for s in DISPATCHER_STATES]
    source = hooks.hook_source().read_bytes()
    for path in written:
        assert path.read_bytes() == source
        assert_0755_root(path, stat.S_IFREG)
        assert_0755_root(path.parent, stat.S_IFDIR)
        assert [p.name for p in path.parent.iterdir()] == [HOOK_NAME]  # no temp files left
    assert_0755_root(paths.local_hook_base, stat.S_IFDIR)


def test_second_install_writes_nothing(paths: Paths) -> None:
    hooks.install(paths)
    before = snapshot(paths.root)

    assert hooks.install(paths) == []
    assert snapshot(paths.root) == before


def test_dry_run_says_what_it_would_do_and_does_nothing(paths: Paths) -> None:
    assert hooks.install(paths, dry_run=True) == hooks.local_hooks(paths)
    assert list(paths.root.iterdir()) == []
    hooks.install(paths)
    assert hooks.uninstall(paths, dry_run=True) != []
    assert all(p.exists() for p in hooks.local_hooks(paths))


def test_nothing_installed_when_the_package_ships_the_hook(paths: Paths) -> None:
    packaged = paths.packaged_hook_base / "carrier.d" / HOOK_NAME
    packaged.parent.mkdir(parents=True)
    packaged.write_bytes(hooks.hook_source().read_bytes())

    assert hooks.install(paths) == []
    assert not paths.local_hook_base.exists()


def test_package_arriving_later_removes_our_shadowing_copies(paths: Paths) -> None:
    hooks.install(paths)
    for state in DISPATCHER_STATES:
        packaged = paths.packaged_hook_base / f"{state}.d" / HOOK_NAME
        packaged.parent.mkdir(parents=True)
        packaged.write_bytes(hooks.hook_source().read_bytes())

    changed = hooks.install(paths)

    assert set(hooks.local_hooks(paths)) <= set(changed)
    assert not any(p.exists() for p in hooks.local_hooks(paths))


def test_a_foreign_file_with_our_name_is_left_alone(paths: Paths) -> None:
    foreign = state_dir(paths, "routable") / HOOK_NAME
    foreign.parent.mkdir(parents=True, mode=0o755)
    foreign.parent.chmod(0o755)
    foreign.write_bytes(FOREIGN)
    foreign.chmod(0o700)
    warnings: list[str] = []

    written = hooks.install(paths, warnings=warnings)

    assert foreign not in written
    assert len(written) == len(DISPATCHER_STATES) - 1
    assert foreign.read_bytes() == FOREIGN
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o700
    assert warnings == [
        "/etc/networkd-dispatcher/routable.d/50-v6gen exists but is not v6gen's; left alone"
    ]
    hooks.uninstall(paths)
    assert foreign.read_bytes() == FOREIGN


def test_a_symlink_with_our_name_is_not_followed(paths: Paths) -> None:
    link = state_dir(paths, "carrier") / HOOK_NAME
    link.parent.mkdir(parents=True)
    link.parent.chmod(0o755)
    target = paths.root / "target"
    target.write_bytes(hooks.hook_source().read_bytes())  # even pointing at a copy of ours
    link.symlink_to(target)

    assert link not in hooks.install(paths)
    assert link not in hooks.uninstall(paths)
    assert link.is_symlink()
    assert target.read_bytes() == hooks.hook_source().read_bytes()


def test_a_foreign_directory_mode_is_reported_not_changed(paths: Paths) -> None:
    directory = state_dir(paths, "degraded")
    directory.mkdir(parents=True)
    directory.chmod(0o775)
    warnings: list[str] = []

    written = hooks.install(paths, warnings=warnings)

    assert directory / HOOK_NAME in written
    assert stat.S_IMODE(directory.stat().st_mode) == 0o775
    assert warnings == [
        "/etc/networkd-dispatcher/degraded.d is mode 0775 owned by 0:0; networkd-dispatcher "
        "runs nothing in it unless it is 0755 root:root (v6gen does not change directories it "
        "did not create)"
    ]


def test_a_symlinked_state_dir_is_not_written_through(paths: Paths) -> None:
    elsewhere = paths.root / "elsewhere"
    elsewhere.mkdir()
    state_dir(paths, "carrier").parent.mkdir(parents=True)
    state_dir(paths, "carrier").symlink_to(elsewhere)
    warnings: list[str] = []

    written = hooks.install(paths, warnings=warnings)

    assert len(written) == len(DISPATCHER_STATES) - 1
    assert list(elsewhere.iterdir()) == []
    assert warnings[0].startswith("/etc/networkd-dispatcher/carrier.d is not a directory")


def test_an_outdated_or_wrong_mode_hook_of_ours_is_fixed(paths: Paths) -> None:
    hooks.install(paths)
    old, loose = hooks.local_hooks(paths)[:2]
    old.write_text(f"#!/bin/sh\n{hooks.MARKER}; an older version\nexit 0\n")
    loose.chmod(0o700)

    assert hooks.install(paths) == [old, loose]
    for path in (old, loose):
        assert path.read_bytes() == hooks.hook_source().read_bytes()
        assert_0755_root(path, stat.S_IFREG)


def test_uninstall_removes_only_ours_and_the_dirs_it_emptied(paths: Paths) -> None:
    hooks.install(paths)
    (state_dir(paths, "degraded") / "10-admin").write_bytes(FOREIGN)
    # networkd-dispatcher's package ships /etc/networkd-dispatcher/carrier.d: it stays.
    info = paths.root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "networkd-dispatcher.list").write_text(
        "/.\n/etc\n/etc/networkd-dispatcher\n/etc/networkd-dispatcher/carrier.d\n"
    )

    removed = hooks.uninstall(paths)

    kept = {"carrier", "degraded"}
    assert removed == [
        *hooks.local_hooks(paths),
        *(state_dir(paths, s) for s in DISPATCHER_STATES if s not in kept),
    ]
    assert not any(p.exists() for p in hooks.local_hooks(paths))
    assert state_dir(paths, "carrier").is_dir()
    assert (state_dir(paths, "degraded") / "10-admin").read_bytes() == FOREIGN
    assert not state_dir(paths, "routable").exists()
    assert paths.local_hook_base.is_dir()
    assert hooks.uninstall(paths) == []
