"""Fixtures for the lab tier: a fresh lab host per test, torn down even when the test fails.

Bring-up takes well under a second once packages, the image tarball and networkd 247.3 are
cached, so every test gets its own namespaces and dockerd instead of sharing state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import kernel, packages
from .debpkg import Deb, build_deb, host_state
from .image import build_rootfs_tar
from .labhost import INSTALLED_ENV, Lab, LabOptions

MakeLab = Callable[..., Lab]
# The package under test (autopkgtest) is installed on the machine's own release; labs in another
# release's root filesystem run v6gen from src/, so they are not the package's tests.
SRC_ONLY = pytest.mark.skipif(
    os.environ.get(INSTALLED_ENV) == "1", reason="runs src/ in a release's chroot, not the package"
)


def checkout_only(what: str) -> pytest.MarkDecorator:
    """Skips a test that builds `what` from the checkout under autopkgtest's installed mode."""
    return pytest.mark.skipif(
        os.environ.get(INSTALLED_ENV) == "1",
        reason=f"builds {what} from the checkout: not a test of the installed package",
    )


@pytest.fixture(scope="session")
def lab_prereqs() -> None:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (namespaces, dockerd, networkd); run them as root")
    packages.ensure_packages()
    kernel.check()
    build_rootfs_tar(packages.CACHE_DIR / "busybox-rootfs.tar")


@pytest.fixture
def make_lab(lab_prereqs: None, tmp_path: Path) -> Iterator[MakeLab]:
    """make_lab(networkd="247", uplinks=2, ...) starts a lab with those LabOptions."""
    labs: list[Lab] = []

    def make(**options: Any) -> Lab:
        lab = Lab(tmp_path / f"lab{len(labs)}", LabOptions(**options))
        labs.append(lab)
        return lab.start()

    yield make
    for lab in labs:
        # Printed output lands in the report's teardown section, where a failure needs it.
        print(f"lab bring-up {lab.bringup_seconds:.2f}s {lab.timings}\n{lab.logs()}")
        lab.stop()


@pytest.fixture
def lab(make_lab: MakeLab) -> Lab:
    """The default lab: networkd 252, dispatcher, dockerd, one static uplink."""
    return make_lab()


@pytest.fixture(scope="session")
def v6gen_deb(lab_prereqs: None) -> Deb:
    """The .deb of the checkout as it is (debpkg.build_deb: cached per source state)."""
    deb = build_deb()
    took = "cached" if deb.build_seconds is None else f"built in {deb.build_seconds:.1f}s"
    print(f"{deb.path} ({took})")
    return deb


@pytest.fixture(scope="module")
def host_before(v6gen_deb: Deb) -> Iterator[dict[str, object]]:
    """The machine's package state before the module's labs (the build may install its
    build-deps first); compared again after the last lab is gone."""
    before = host_state()
    yield before
    assert host_state() == before, "the machine's dpkg/apt state changed"
