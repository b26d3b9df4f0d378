"""When should a client ask again? A hint from the queue ahead of a task and the recent pace.

A fixed one-second hint made every waiting client poll once a second: 32 clients behind an 80 s
queue sent some 2,500 requests, and on a small host each took CPU from the workers. Told to come
back after half the expected remaining wait, a client asks a handful of times. The hint has
sub-second resolution (a GPU finishes in tens of milliseconds): it is sent in the body as
`poll_after_s`, and rounded to whole seconds (0 allowed) in Retry-After, which can say no finer.
A client that wants its answer the moment it exists should not poll at all but ask with ?wait=.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg2

from cvunet_matting import db
from cvunet_matting.db import reads
from cvunet_matting.states import TaskState

log = logging.getLogger(__name__)

MIN_S = 0.05  # no finer than this: a poll costs the web tier more than it gains
MAX_S = 10.0  # a wrong estimate (workers just added, say) delays a client by this much at most
UNKNOWN_S = 1.0  # no history yet, or the database cannot tell
PACE_TTL_S = 5.0  # the pace is one query per web process every few seconds, not one per poll


@dataclass(frozen=True)
class Pace:
    workers: int
    seconds_per_task: float


def poll_after(state: str, ahead: int, running_for: float, pace: Pace | None) -> float:
    """Seconds to wait before the next status request: half the expected remaining time, clamped."""
    if pace is None:
        return UNKNOWN_S
    if state == TaskState.STARTED:
        # Past the usual time the estimate is wrong (a bigger image, a slower worker): back off with
        # the time it has run, instead of asking MIN_S apart until it ends.
        remaining = max(pace.seconds_per_task - running_for, running_for / 2)
    else:  # pending or waiting to retry: the tasks ahead share the workers, then this one runs
        remaining = (ahead / pace.workers + 1) * pace.seconds_per_task
    return round(min(MAX_S, max(MIN_S, remaining / 2)), 3)


def header(seconds: float) -> str:
    """Retry-After's whole seconds, rounded to the nearest: 0 for work that ends within half a second."""
    return str(int(seconds + 0.5))


class PaceCache:
    """The recent pace, read from Postgres at most once per `ttl` seconds."""

    def __init__(self, ttl: float = PACE_TTL_S, clock: Callable[[], float] = time.monotonic):
        self.ttl, self.clock = ttl, clock
        self._value: Pace | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def get(self, cur) -> Pace | None:
        with self._lock:
            if self.clock() - self._read_at < self.ttl:
                return self._value
        row = reads.recent_pace(cur)
        value = Pace(row["workers"], float(row["seconds"])) if row["workers"] and row["seconds"] else None
        with self._lock:
            self._value, self._read_at = value, self.clock()
        return value


def retry_after(row: Mapping[str, Any], cache: PaceCache) -> float:
    """The hint for an unfinished task row (or a batch's, as of its creation); UNKNOWN_S when the
    database cannot tell."""
    try:
        with db.transaction() as cur:
            pace = cache.get(cur)
            waiting = pace is not None and row["state"] != TaskState.STARTED
            ahead = reads.waiting_ahead(cur, row["created_at"]) if waiting else 0
    except psycopg2.Error as exc:
        log.warning("poll hint falls back to %g s: %s", UNKNOWN_S, exc)
        return UNKNOWN_S
    started = row.get("started_at")
    running_for = (datetime.now(UTC) - started).total_seconds() if started else 0.0
    return poll_after(row["state"], ahead, running_for, pace)
