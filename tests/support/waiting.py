"""Waiting for a condition: the one polling loop the tests use."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float, *, interval: float = 0.2, message: str = "condition not met"
) -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy, and return that;
    raise AssertionError (so the test fails, saying what it waited for) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} (gave up after {timeout}s)")


def wait_for(
    predicate: Callable[[], T], timeout: float, message: str = "condition not met", interval: float = 0.2
) -> T:
    """wait_until with the message as third positional argument, as older callers pass it."""
    return wait_until(predicate, timeout, interval=interval, message=message)
