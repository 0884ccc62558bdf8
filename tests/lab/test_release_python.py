"""The unit and D-Bus test tiers under trixie's and sid's own /usr/bin/python3 (3.13, 3.14) and
Debian's builds of v6gen's libraries, as `make test-system-python` runs them on bookworm.

debian/tests/run-system-python runs inside the release's cached root filesystem, chrooted as the
lab's host is (release.py): an overlay on a tmpfs over the cached tree, fresh /run and /tmp, the
checkout bound read-only at its own path, and new network, mount and PID namespaces. The D-Bus
tier's private dbus-daemon and the release's real systemd-networkd then run in namespaces of
their own made inside it, so nothing reaches the machine's bus or links. Every package the script
checks for is in the tree (rootfs.py), so it never needs the network it does not have there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SRC_ONLY
from .release import REPO, ChrootNamespace

pytestmark = [pytest.mark.lab, SRC_ONLY]

PYTHONS = {"trixie": "3.13.", "sid": "3.14."}
RELEASES = sorted(PYTHONS)
DIST_PACKAGES = "/usr/lib/python3/dist-packages/"
# The script's own report: its interpreter, then one line per library with version and file.
INTERPRETER = re.compile(r"^run-system-python: (\S+) (\S+)$", re.MULTILINE)
LIBRARY = re.compile(r"^  (\S+)\s+(\S+)\s+(/\S+)$", re.MULTILINE)
# Only a hang ends the run early: a safety net far above any run (no assertion on time).
HANG_SECONDS = 1800


@pytest.fixture
def chroot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ChrootNamespace]:
    if os.geteuid() != 0:
        pytest.skip("needs root: chroot, overlay and namespaces")
    release: str = request.node.callspec.params["release"]
    logdir = tmp_path / "logs"
    logdir.mkdir()
    ns = ChrootNamespace(logdir, "host", release, tmp_path)
    try:
        ns.start()
        yield ns
    finally:
        ns.stop()


@pytest.mark.parametrize("release", RELEASES)
def test_unit_and_dbus_tiers_under_release_python(release: str, chroot: ChrootNamespace) -> None:
    # env -i: nothing of this process's environment (the venv, a bus address) leaks inside.
    argv = ["env", "-i", "HOME=/root", "LANG=C.UTF-8", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    argv += [str(REPO / "debian/tests/run-system-python"), "-q"]
    res = chroot.run(argv, check=False, timeout=HANG_SECONDS)
    output = f"exit {res.returncode}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
    # Shown in the report's captured output of a failure beside the assertion.
    print(output)
    assert res.returncode == 0, output

    interpreter = INTERPRETER.search(res.stdout)
    assert interpreter, output
    assert interpreter.group(1) == "/usr/bin/python3", output
    assert interpreter.group(2).startswith(PYTHONS[release]), output
    libraries = {m.group(1): m.group(3) for m in LIBRARY.finditer(res.stdout)}
    for dist in ("typer", "click", "docker", "dbus-next", "Jinja2", "PyYAML", "pytest"):
        assert libraries.get(dist, "").startswith(DIST_PACKAGES), (dist, output)
    assert libraries.get("v6gen", "").startswith(f"{REPO}/src/"), output

    # Both tiers ran, none of it skipped (the real networkd's tests skip when not root).
    assert re.search(r"^\d+ passed", res.stdout.splitlines()[-1]), output
    assert "SKIPPED" not in res.stdout, output
