"""Docker unreachable in every way we can make it: exit 4, and not one file, kernel entry or
sysctl changed. Live runs in a fault host (a private network + mount namespace, faultns.py).

What is simulated, honestly:
- socket missing: the config names a path where nothing listens (a real ENOENT from connect);
- permission denied: a real EACCES from connect(2). As root that cannot happen (root passes
  every permission check), so that run is a real `python3 -m v6gen` as uid/gid 65534 with no
  supplementary groups (setpriv), on Debian's /usr/bin/python3 and a world-readable copy of
  the code, against a socket only root may open, with --root on a tree that user owns (live
  runs need root: see the lock test at the end);
- connection closed at once, and a daemon that accepts the request and never answers: the
  replay server does exactly that (the latter bounded by docker_timeout).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .faultns import REPO, FaultHost
from .replay import DockerReplay, body, container
from .tree import Snapshot, changed

GOOD = [container("good", "2001:db8::a:1"), container("also", "2001:db8::a:2")]
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"


def _state(host: FaultHost) -> tuple[Snapshot, frozenset[tuple[str, str]], dict[str, str]]:
    return (
        host.snapshot(),
        host.proxy_entries(),
        host.sysctls(
            "net/ipv6/conf/all/forwarding",
            "net/ipv6/conf/uplink0/proxy_ndp",
            "net/ipv6/neigh/uplink0/proxy_delay",
        ),
    )


@pytest.fixture
def synced(fhost: FaultHost, replay: DockerReplay) -> FaultHost:
    replay.containers = body(GOOD)
    assert fhost.v6gen("sync").code == 5  # networkd is not running in here: reload pending
    # The next state Docker would report, if it could be asked.
    replay.containers = body([*GOOD, container("new", "2001:db8::a:3")])
    return fhost


def _assert_unchanged(host: FaultHost, before: tuple[Snapshot, object, object]) -> None:
    after = _state(host)
    assert changed(before[0], after[0]) == {}
    assert after[1:] == before[1:]


def test_socket_missing(synced: FaultHost, sockdir: Path) -> None:
    missing = f"unix://{sockdir}/missing.sock"
    synced.write_config(docker_host=missing)
    before = _state(synced)
    run = synced.v6gen("sync")
    assert (run.code, run.out) == (4, "")
    assert run.err == (
        "error: cannot ask Docker for its containers: "
        "('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))\n"
        f"hint: is dockerd running? v6gen asked {missing}; set docker_host in the config\n"
    )
    _assert_unchanged(synced, before)


def test_connection_closed_at_once(synced: FaultHost, replay: DockerReplay) -> None:
    before = _state(synced)
    replay.mode = "close"
    run = synced.v6gen("sync")
    assert (run.code, run.out) == (4, "")
    assert run.err == (
        "error: cannot ask Docker for its containers: "
        "('Connection aborted.', RemoteDisconnected('Remote end closed connection without "
        "response'))\n"
        f"hint: is dockerd running? v6gen asked {replay.url}; set docker_host in the config\n"
    )
    _assert_unchanged(synced, before)


def test_hanging_daemon_times_out(synced: FaultHost, replay: DockerReplay) -> None:
    synced.write_config(timeout=1)
    before = _state(synced)
    replay.mode = "hang"  # for good: only docker_timeout can end the wait
    asked = replay.counts["/containers/json"]
    t0 = time.monotonic()
    run = synced.v6gen("sync", timeout=120)  # a hang guard
    took = time.monotonic() - t0
    assert (run.code, run.out) == (4, "")
    assert run.err == (
        "error: cannot ask Docker for its containers: UnixHTTPConnectionPool(host='localhost', "
        "port=None): Read timed out. (read timeout=1.0)\n"
        "hint: dockerd did not answer within 1 s (docker_timeout)\n"
    )
    # The error names the timeout that fired, and a timer never fires early; how much longer
    # the run took is up to the machine's load, so no upper limit.
    assert took >= 1.0, f"gave up after {took:.2f} s, docker_timeout is 1 s"
    assert replay.counts["/containers/json"] == asked + 1  # it asked, then waited
    _assert_unchanged(synced, before)


@pytest.fixture
def code_copy(sockdir: Path) -> Iterator[Path]:
    """The code where an unprivileged user can read it (/root and the venv are root's only)."""
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} (Debian's python3 with the packaged libraries) is missing")
    copy = sockdir / "code"
    for part in ("src", "generators", "dispatcher-hooks"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    for p in (copy, *copy.rglob("*")):
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield copy


def _as_nobody(host: FaultHost, code: Path, *argv: str) -> tuple[int, str, str]:
    """`python3 -m v6gen ARGV` as uid/gid 65534 without groups, in the fault host."""
    log = host.workdir / f"nobody-{time.monotonic_ns()}.log"
    pid = int(
        host.call(
            "fork",
            exec=[
                "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
                SYSTEM_PYTHON, "-m", "v6gen", *argv,
            ],
            argv=[],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                 "PYTHONPATH": str(code / "src"), "PYTHONDONTWRITEBYTECODE": "1"},
            out=f"{log}.out",
            err=f"{log}.err",
        )["pid"]
    )  # fmt: skip
    reply = host.call("wait", wait_s=40, pid=pid, timeout=30)
    return int(reply["code"]), Path(f"{log}.out").read_text(), Path(f"{log}.err").read_text()


def test_permission_denied_for_an_unprivileged_user(
    fhost: FaultHost, replay: DockerReplay, code_copy: Path, sockdir: Path
) -> None:
    tree = sockdir / "tree"  # --root: files only, the kernel is left alone
    conf = tree / "etc/v6gen/config.yaml"
    conf.parent.mkdir(parents=True)
    conf.write_text(
        "uplinks: [uplink0]\n"
        "network_files: {uplink0: /etc/systemd/network/10-uplink0.network}\n"
        f"systemd_version: 252\ndocker_host: {replay.url}\n"
    )
    network = tree / "etc/systemd/network/10-uplink0.network"
    network.parent.mkdir(parents=True)
    network.write_text("[Match]\nName=uplink0\n\n[Network]\nIPv6AcceptRA=no\n")
    for p in (tree, *tree.rglob("*")):
        os.chown(p, NOBODY, NOBODY)
    # First the user may use Docker (as a member of the docker group could)...
    replay.containers = body(GOOD)
    replay.socket_path.chmod(0o666)
    code, out, err = _as_nobody(fhost, code_copy, "sync", "--root", str(tree))
    assert code == 0, err
    assert "write  /etc/systemd/network/10-uplink0.network.d/50-v6gen.conf" in out
    # ...then not any more: the socket is root's, as dockerd makes it (root:docker 0660).
    replay.socket_path.chmod(0o660)
    replay.containers = body([*GOOD, container("new", "2001:db8::a:3")])
    before, kernel = _snapshot(tree), fhost.proxy_entries()
    code, out, err = _as_nobody(fhost, code_copy, "sync", "--root", str(tree))
    assert (code, out) == (4, "")
    assert err == (
        "error: cannot ask Docker for its containers: "
        "('Connection aborted.', PermissionError(13, 'Permission denied'))\n"
        "hint: run as root (or a member of the docker group)\n"
    )
    assert changed(before, _snapshot(tree)) == {}
    assert fhost.proxy_entries() == kernel


def test_live_run_without_root_is_a_clear_error(
    synced: FaultHost, replay: DockerReplay, code_copy: Path
) -> None:
    """Not Docker's fault but the first thing an unprivileged live run meets: the lock."""
    replay.socket_path.chmod(0o666)
    before = _state(synced)
    code, out, err = _as_nobody(synced, code_copy, "sync")
    assert (code, out) == (7, "")
    assert err == (
        "error: cannot open the lock file /run/v6gen/lock: Permission denied\n"
        "hint: sync, clean and watch change the host's network configuration: run them as root\n"
    )
    _assert_unchanged(synced, before)


def _snapshot(tree: Path) -> Snapshot:
    from .tree import snapshot

    return snapshot(tree, base=tree)
