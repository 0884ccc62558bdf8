"""Fixtures of the fault tier: short socket directories, a Docker replay, an in-process CLI host
on a temporary root, and (root only) a private namespace host with a real kernel side."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .faultns import FaultHost
from .inproc import CliHost, make_host
from .replay import DockerReplay


@pytest.fixture
def sockdir() -> Iterator[Path]:
    """A short directory for unix sockets (pytest's tmp_path can exceed the 108-byte limit),
    traversable by every user so that an unprivileged process can reach (or fail on) them."""
    d = Path(tempfile.mkdtemp(prefix="v6f-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def replay(sockdir: Path) -> Iterator[DockerReplay]:
    with DockerReplay(sockdir / "docker.sock") as r:
        yield r


@pytest.fixture
def host(tmp_path: Path, replay: DockerReplay, monkeypatch: pytest.MonkeyPatch) -> CliHost:
    return make_host(tmp_path / "root", replay, monkeypatch)


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(
            "needs root: private network and mount namespaces, tmpfs/bind mounts, chown and "
            "capability drops; run the fault tier as root"
        )


@pytest.fixture
def fhost(needs_root: None, tmp_path: Path, replay: DockerReplay) -> Iterator[FaultHost]:
    """A fault host with one uplink whose Docker is `replay`."""
    with FaultHost(tmp_path / "ns", replay.url) as h:
        yield h
