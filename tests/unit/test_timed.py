"""make test's stopwatch (tests/timed.py): steps in order, each pytest step broken down by tier,
the total only of whole steps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import timed


def test_summary_groups_tiers_under_their_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = tmp_path / "times"
    times.write_text("lint 2.0\npytest 620.0\npytest:lab 600.0\npytest:unit 10.0\n")
    monkeypatch.setenv("V6GEN_TIER_TIMES", str(times))
    lines = timed.summary().splitlines()
    assert [ln.split()[0] for ln in lines[1:]] == ["lint", "pytest", "lab", "unit", "total"]
    assert lines[-1].split()[1:3] == ["622.0", "s"]
    assert "10.4 min" in lines[-1]


def test_run_records_the_time_and_keeps_the_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    times = tmp_path / "times"
    monkeypatch.setenv("V6GEN_TIER_TIMES", str(times))
    assert timed.main(["fails", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    label, seconds = times.read_text().split()
    assert label == "fails"
    assert float(seconds) >= 0


def test_a_pytest_step_is_broken_down_by_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the JUnit XML of a real pytest run over two tiers' worth of test files."""
    for tier, body in (("unit", "pass"), ("lab", "time.sleep(0.2)")):
        (tmp_path / "tests" / tier).mkdir(parents=True)
        (tmp_path / "tests" / tier / f"test_{tier}.py").write_text(
            f"import time\n\ndef test_{tier}():\n    {body}\n"
        )
    times, junit = tmp_path / "times", tmp_path / "junit.xml"
    monkeypatch.setenv("V6GEN_TIER_TIMES", str(times))
    monkeypatch.chdir(tmp_path)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", "."]
    assert timed.main(["pytest", *argv, f"--junitxml={junit}", "tests"]) == 0
    seconds = dict(line.split() for line in times.read_text().splitlines())
    assert set(seconds) == {"pytest", "pytest:lab", "pytest:unit"}
    assert float(seconds["pytest:lab"]) >= 0.2
