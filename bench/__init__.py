"""v6gen benchmarks (issue 4 "Benchmarks", issue 5 watch_* metrics).

`python -m bench` (PYTHONPATH=src, as root, from the repository root; `make bench`) runs every
measurement side by side in one go, prints a table and writes bench/results.json. Method:
bench/README.md. Nothing here is a timed assertion: the numbers are reported, targets are only
compared and printed.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / "bench"
RESULTS = BENCH_DIR / "results.json"
# Lab work directories and logs of the last run (gitignored).
CACHE = BENCH_DIR / ".cache"
