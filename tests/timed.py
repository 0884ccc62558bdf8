"""make test's stopwatch: `python -m tests.timed LABEL CMD...` runs CMD, appends `LABEL seconds`
to $V6GEN_TIER_TIMES and exits with CMD's status; `python -m tests.timed --summary` prints every
step of the run against the suite's time budget (README, "Two commands for developers").

A pytest step given `--junitxml=FILE` is also broken down by tier (tests/<tier>/...): each test
case's time there is its setup, call and teardown, so a session fixture's first use (a root
filesystem built, a daemon started) counts in the tier that needed it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

# The budget a warm `make test` on 2 cores keeps (caches built, nothing else running); a cold
# run first builds the lab's root filesystems and networkd 247, and keeps COLD_BUDGET_MIN.
WARM_BUDGET_MIN = 25
COLD_BUDGET_MIN = 50


def _times_file() -> Path:
    name = os.environ.get("V6GEN_TIER_TIMES")
    if not name:
        sys.exit("tests.timed: V6GEN_TIER_TIMES is not set")
    return Path(name)


def tier_seconds(junit_xml: Path) -> dict[str, float]:
    """Seconds per tier from pytest's JUnit XML (classname "tests.<tier>.<module>...")."""
    tiers: defaultdict[str, float] = defaultdict(float)
    # pytest's own report of this run, not outside input.
    for case in ET.parse(junit_xml).getroot().iter("testcase"):  # noqa: S314
        parts = case.get("classname", "").split(".")
        tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else "other"
        tiers[tier] += float(case.get("time", "0"))
    return dict(tiers)


def run(label: str, argv: list[str]) -> int:
    start = time.monotonic()
    code = subprocess.call(argv)
    lines = [f"{label} {time.monotonic() - start:.1f}"]
    for arg in argv:
        junit = Path(arg.removeprefix("--junitxml="))
        if arg.startswith("--junitxml=") and junit.exists():
            lines += [f"{label}:{t} {s:.1f}" for t, s in sorted(tier_seconds(junit).items())]
    with _times_file().open("a", encoding="utf-8") as f:
        f.write("".join(f"{line}\n" for line in lines))
    return code


def summary() -> str:
    steps: list[tuple[str, float]] = []
    tiers: dict[str, list[tuple[str, float]]] = {}
    for line in _times_file().read_text(encoding="utf-8").splitlines():
        label, _, seconds = line.rpartition(" ")
        step, _, tier = label.partition(":")
        # "step:tier" lines break a pytest step down by tier.
        if tier:
            tiers.setdefault(step, []).append((tier, float(seconds)))
        else:
            steps.append((step, float(seconds)))
    total = sum(seconds for _, seconds in steps)
    lines = ["time per step of make test (pytest steps by tier):"]
    for step, step_seconds in steps:
        lines.append(f"  {step:<24} {step_seconds:8.1f} s")
        for tier, tier_seconds in sorted(tiers.get(step, []), key=lambda t: -t[1]):
            lines.append(f"    {tier:<22} {tier_seconds:8.1f} s")
    lines.append(
        f"  {'total':<24} {total:8.1f} s = {total / 60:.1f} min "
        f"(budget: warm {WARM_BUDGET_MIN} min, cold {COLD_BUDGET_MIN} min)"
    )
    return "\n".join(lines)


def main(args: list[str]) -> int:
    if args == ["--summary"]:
        print(summary())
        return 0
    if len(args) < 2:
        sys.exit("usage: python -m tests.timed LABEL CMD... | --summary")
    return run(args[0], args[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
