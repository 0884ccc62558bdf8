"""v6gen.hostview: the host's /proc/sys and os-release as the image sees them bound under
V6GEN_HOST. The os-release files are base-files' own, from Debian 12 (this machine) and the
lab's trixie and sid trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from v6gen import hostview

RELEASES = Path(__file__).resolve().parents[1] / "fixtures" / "os-release"


def test_release_names() -> None:
    assert hostview.release(RELEASES / "bookworm") == ("debian", "bookworm")
    assert hostview.release(RELEASES / "trixie") == ("debian", "trixie")
    assert hostview.release(RELEASES / "sid") == ("debian", "sid")  # it says forky/sid
    assert hostview.release(RELEASES / "missing") is None


def test_outside_the_image_nothing_is_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(hostview.ENV, raising=False)
    assert hostview.proc_sys() == Path("/proc/sys")
    assert hostview.release_check() is None


def test_in_the_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(hostview.ENV, str(tmp_path))
    monkeypatch.setattr(hostview, "OS_RELEASE", RELEASES / "bookworm")
    # Nothing bound yet: v6gen's own /proc/sys, and doctor says what to bind.
    assert hostview.proc_sys() == Path("/proc/sys")
    check = hostview.release_check()
    assert check is not None and check[0] == "warn" and "/etc/os-release" in check[2]
    (tmp_path / "proc/sys/net").mkdir(parents=True)
    assert hostview.proc_sys() == tmp_path / "proc/sys"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_bytes((RELEASES / "bookworm").read_bytes())
    assert hostview.release_check() == (
        "ok",
        "debian bookworm, as the host: its nft and ip6tables read the host's rules",
        "",
    )
    (tmp_path / "etc/os-release").write_bytes((RELEASES / "sid").read_bytes())
    level, message, hint = hostview.release_check() or ("", "", "")
    assert level == "warn" and "the image is debian bookworm, the host debian sid" in message
    assert "--build-arg BASE=debian:sid-slim" in hint
