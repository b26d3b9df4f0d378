"""Fault injection, for the fault and failover tests only: never set in production, and absent from
the settings (config.py) and README's table.

CVUNET_TEST_CRASH_ON: comma-separated input keys on which a worker kills itself, as an OOM kill would.
CVUNET_TEST_DELAY_S: extra seconds every image holds its worker, as a slow device would.
Read from the environment once per process, on its first image.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Faults:
    crash_on_inputs: frozenset[str]
    delay_s: float


@lru_cache(maxsize=1)
def faults() -> Faults:
    """The faults this process's environment asks for."""
    crash_on = os.environ.get("CVUNET_TEST_CRASH_ON", "")
    delay = os.environ.get("CVUNET_TEST_DELAY_S", "").strip()
    return Faults(frozenset(key.strip() for key in crash_on.split(",") if key.strip()), float(delay or 0))


def inject_faults(input_key: str) -> None:
    """Die like an OOM-killed process on a chosen input, or hold every image longer."""
    if input_key in faults().crash_on_inputs:
        os.kill(os.getpid(), signal.SIGKILL)
    if faults().delay_s:
        time.sleep(faults().delay_s)
