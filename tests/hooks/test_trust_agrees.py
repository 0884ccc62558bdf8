"""v6gen.trust (what sync keeps and doctor reports) and the real hook refuse the same paths for
the same reasons: one set of rules, written twice (Python and POSIX sh), checked here against
each other on the same trees."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from v6gen import trust
from v6gen.paths import Paths

from .conftest import UPLINK, Lab, restore_files


def _tree(lab: Lab) -> Paths:
    """A root whose /var/lib is the directory the hook sees as /var/lib."""
    root = lab.tmp / "root"
    (root / "var").mkdir(parents=True)
    (root / "var").chmod(0o755)
    (root / "var/lib").symlink_to(lab.varlib)  # followed, as the hook's "/var/lib/" is
    return Paths(root)


def _symlink_data(lab: Lab) -> None:
    real = lab.tmp / "real.proxy"
    lab.data_file().rename(real)
    lab.data_file().symlink_to(real)


BREAKAGES: dict[str, tuple[Callable[[Lab], None], str, str]] = {
    "state dir of a bare tmpfs": (
        lambda lab: lab.uplinks.parent.chmod(0o1777),
        "/var/lib/v6gen",
        "writable by group or others",
    ),
    "restore dir under umask 002": (
        lambda lab: lab.uplinks.chmod(0o775),
        "/var/lib/v6gen/uplinks",
        "writable by group or others",
    ),
    "restore file world-writable": (
        lambda lab: lab.data_file().chmod(0o666),
        f"/var/lib/v6gen/uplinks/{UPLINK}.proxy",
        "writable by group or others",
    ),
    "restore file a symlink": (
        _symlink_data,
        f"/var/lib/v6gen/uplinks/{UPLINK}.proxy",
        "a symlink, not a regular file",
    ),
    "state dir of another user": (
        lambda lab: os.chown(lab.uplinks.parent, 65534, 65534),
        "/var/lib/v6gen",
        "owned by uid 65534, not root",
    ),
    "/var/lib open to all": (
        lambda lab: lab.varlib.chmod(0o777),
        "/var/lib/",  # the hook's spelling: the slash makes stat follow a symlinked /var/lib
        "writable by group or others",
    ),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_the_hook_and_trust_refuse_alike(lab: Lab, case: str) -> None:
    lab.write_data(restore_files(["2001:db8::a:1"])["proxy"])
    paths = _tree(lab)
    assert trust.check(trust.restore_chain(paths, UPLINK)) == []
    assert lab.run_hook().line["n"] == "1"
    lab.flap()

    breakage, where, why = BREAKAGES[case]
    breakage(lab)
    run = lab.run_hook()
    assert run.line["n"] == "0" and run.line["notes"] == f"; refused {where}: {why}"
    found = {
        (str(paths.host_path(f.link.path)), f.why)
        for f in trust.check(trust.restore_chain(paths, UPLINK))
    }
    assert (where.rstrip("/"), why) in found
    assert lab.proxies() == set()
