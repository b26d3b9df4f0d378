"""One line of `make reliability`'s table: what became of a scenario's images. Its own module, so the
load test (loadtest.py) and the fault scenarios (reliability.py) share it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    scenario: str
    inputs: int
    completed: int
    failed_expected: int
    lost: int
    duplicated: int
    note: str = ""
    recovery_s: float | None = None  # from the fault to the image running again
