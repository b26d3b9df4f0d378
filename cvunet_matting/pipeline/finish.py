"""The first result wins: a task that runs twice (its worker declared dead, then back) finishes once.

A task counts as finished once Celery's result backend holds its final state: that is also when its
chord counter was incremented. A second run that finds it finished is dropped (`celery.exceptions.
Ignore`: no result stored, no chord counted, the message acknowledged). Two runs finishing at the
same moment are told apart by a claim key; the loser waits for the winner's result, and only if the
winner died before storing it does the loser finish in its place.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from celery import states

CLAIM = "cvunet:finish:"
CLAIM_TTL = 7 * 24 * 3600
WINNER_WAIT_S = 10.0
# A worker cut off from Redis waits this long for it before giving up on finishing: the task is not
# over until Redis knows, and by then another worker has usually redone it (then this run is dropped).
REDIS_WAIT_S = 300.0


def is_finished(app, task_id: str) -> bool:
    return app.backend.get_state(task_id) in states.READY_STATES


def _set_claim(client: redis.Redis, task_id: str, owner: str, redis_wait_s: float) -> bool:
    deadline = time.monotonic() + redis_wait_s
    while True:
        try:
            return bool(client.set(CLAIM + task_id, owner, nx=True, ex=CLAIM_TTL))
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)


def claim(
    client: redis.Redis,
    app,
    task_id: str,
    owner: str,
    wait_s: float = WINNER_WAIT_S,
    redis_wait_s=REDIS_WAIT_S,
    first_try: Callable[[str, int], bool] | None = None,
) -> bool:
    """True if this run should finish the task; False if another run already did.

    `first_try(key, ttl)`, when given, sets the claim key as _set_claim would (with more in the same
    round trip: the run's end, see tasks.finish_run); if Redis cannot be reached it, the claim is
    set alone, waiting for Redis as always."""
    if first_try is not None:
        try:
            claimed = first_try(CLAIM + task_id, CLAIM_TTL)
        except (redis.ConnectionError, redis.TimeoutError):
            claimed = _set_claim(client, task_id, owner, redis_wait_s)
    else:
        claimed = _set_claim(client, task_id, owner, redis_wait_s)
    if claimed:
        return True
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if is_finished(app, task_id):
            return False
        time.sleep(0.2)
    client.set(CLAIM + task_id, owner, ex=CLAIM_TTL)  # the winner died before storing its result
    return True


def forget(client: redis.Redis, app, task_ids: list[str]) -> None:
    """Before a task id is published again (retry, requeue): its earlier end no longer counts."""
    if not task_ids:
        return
    client.delete(*[CLAIM + t for t in task_ids])
    for task_id in task_ids:
        app.backend.forget(task_id)
