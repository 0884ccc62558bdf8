"""Engine detection against a fake filesystem root: which engine v6gen asks with no docker_host."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from v6gen import detect
from v6gen.detect import DOCKER, PODMAN, EngineChoice, choose
from v6gen.paths import Paths

PODMAN_SOCK = "run/podman/podman.sock"


def socket_at(root: Path, relative: str) -> None:
    """A socket inode as a listening daemon leaves it (mknod needs no privilege for sockets)."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFSOCK | 0o660)


def file_at(root: Path, relative: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def pick(
    root: Path, configured: str | None = None, env: dict[str, str] | None = None
) -> EngineChoice:
    return choose(configured, env or {}, Paths(root))


def test_podman_alone_is_found_and_said_so(tmp_path: Path) -> None:
    socket_at(tmp_path, PODMAN_SOCK)
    choice = pick(tmp_path)
    assert (choice.host, choice.engine) == ("unix:///run/podman/podman.sock", PODMAN)
    assert choice.describe() == (
        "Podman at unix:///run/podman/podman.sock (found its socket; no Docker here)"
    )
    assert choice.unfollowed == () and choice.rootless == ()


def test_docker_socket_wins_and_podman_is_named_as_not_followed(tmp_path: Path) -> None:
    socket_at(tmp_path, "run/docker.sock")
    socket_at(tmp_path, PODMAN_SOCK)
    choice = pick(tmp_path)
    assert (choice.host, choice.engine, choice.why) == (
        "unix:///run/docker.sock",
        DOCKER,
        "Docker's socket",
    )
    assert choice.unfollowed == ("Podman at unix:///run/podman/podman.sock",)


def test_installed_docker_without_its_socket_is_still_docker(tmp_path: Path) -> None:
    """dockerd stopped with its socket unit: falling back to Podman would drop Docker's
    containers' entries at the next sync."""
    file_at(tmp_path, "usr/sbin/dockerd")
    socket_at(tmp_path, PODMAN_SOCK)
    choice = pick(tmp_path)
    assert (choice.host, choice.engine, choice.why) == (None, DOCKER, "dockerd is installed")
    assert choice.where == "unix:///var/run/docker.sock"
    assert choice.unfollowed == ("Podman at unix:///run/podman/podman.sock",)


def test_docker_ce_path_and_var_run_socket(tmp_path: Path) -> None:
    file_at(tmp_path, "usr/bin/dockerd")
    assert pick(tmp_path).why == "dockerd is installed"
    socket_at(tmp_path, "var/run/docker.sock")
    assert pick(tmp_path).host == "unix:///var/run/docker.sock"


def test_configured_and_environment_win_over_sockets(tmp_path: Path) -> None:
    socket_at(tmp_path, "run/docker.sock")
    configured = pick(tmp_path, "unix:///run/podman/podman.sock")
    assert (configured.engine, configured.why) == (PODMAN, "docker_host in the config")
    assert configured.unfollowed == ()
    env = pick(tmp_path, env={"DOCKER_HOST": "tcp://[::1]:2375"})
    # The SDK reads DOCKER_HOST itself: no host is passed, but reports name it.
    assert (env.host, env.engine, env.where) == (None, DOCKER, "tcp://[::1]:2375")


def test_a_plain_file_is_no_socket(tmp_path: Path) -> None:
    file_at(tmp_path, PODMAN_SOCK)
    choice = pick(tmp_path)
    assert (choice.host, choice.engine, choice.why) == (None, DOCKER, detect.NOTHING_FOUND)


def test_rootless_sockets_are_noted_never_followed(tmp_path: Path) -> None:
    socket_at(tmp_path, "run/user/1000/podman/podman.sock")
    choice = pick(tmp_path)
    assert (choice.host, choice.why) == (None, detect.NOTHING_FOUND)
    assert choice.rootless == (Path("/run/user/1000/podman/podman.sock"),)
    socket_at(tmp_path, PODMAN_SOCK)
    rootful = pick(tmp_path)
    assert rootful.engine == PODMAN and rootful.rootless == choice.rootless


@pytest.mark.parametrize(
    ("url", "rootless", "engine"),
    [
        ("unix:///run/user/1000/podman/podman.sock", True, PODMAN),
        ("unix:///run/podman/podman.sock", False, PODMAN),
        ("unix:///run/docker.sock", False, DOCKER),
        ("unix:///run/user/1000/docker.sock", False, DOCKER),  # rootless Docker: not Podman
    ],
)
def test_url_kinds(url: str, rootless: bool, engine: str) -> None:
    assert detect.is_rootless(url) is rootless
    assert detect.engine_of(url) == engine
