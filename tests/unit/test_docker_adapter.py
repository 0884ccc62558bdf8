"""The real docker SDK adapter against a replay of captured dockerd answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from v6gen.adapters.docker import DockerAPI
from v6gen.errors import DockerError

from dockerreplay import DockerReplay


def test_one_list_call_per_sync_whatever_the_container_count(tmp_path: Path) -> None:
    with DockerReplay(tmp_path / "d.sock", "mixed_running.json") as docker:
        api = DockerAPI(docker.url, timeout=5)
        first = api.endpoints()
        second = api.endpoints()
        api.close()
    assert len(first) == 4 and first == second
    # the version is asked once per client (API "auto"), the list once per sync
    assert docker.requests == {"/version": 1, "/containers/json": 2}


def test_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(DockerError) as info:
        DockerAPI(f"unix://{tmp_path}/nope.sock", timeout=2).endpoints()
    assert "cannot ask Docker" in info.value.message
    assert "is dockerd running?" in info.value.hint


def test_permission_denied_hint() -> None:
    # As root (CI) the socket's mode can't deny us, so check the mapping of the SDK's error.
    error = DockerAPI("unix:///x.sock")._error(
        ConnectionError("('Connection aborted.', PermissionError(13, 'Permission denied'))")
    )
    assert "run as root" in error.hint


def test_hanging_daemon_times_out(tmp_path: Path) -> None:
    with DockerReplay(tmp_path / "d.sock") as docker:
        docker.hang()  # for good, so only the client's own timeout can end the wait
        with pytest.raises(DockerError) as info:
            DockerAPI(docker.url, timeout=0.5).endpoints()
    assert "did not answer within" in info.value.hint


def test_garbage_answer_is_an_error_not_an_empty_list(tmp_path: Path) -> None:
    garbage = DockerReplay(tmp_path / "d.sock", b'{"message": "not a list"}')
    with garbage as docker, pytest.raises(DockerError):
        DockerAPI(docker.url, timeout=2).endpoints()
