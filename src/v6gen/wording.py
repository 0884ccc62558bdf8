"""Counts in sentences: "1 address", "2 addresses", never "address(es)"."""

from __future__ import annotations


def count(n: int, one: str, many: str = "") -> str:
    """`n` and the noun in the right number; `many` defaults to `one` + "s"."""
    return f"{n} {one if n == 1 else many or one + 's'}"
