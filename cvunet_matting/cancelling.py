"""Cancelling work that has not started: its owner changed their mind (a folder of 10,000 sent by mistake).

A cancelled task keeps its message. The worker that receives it ends it at once, as failed with the
code `cancelled`, before reading its input or touching the model: its batch's chord counts it like any
other, the batch finishes (its ZIP holds what was done), the row says what happened, and a retry runs it
after all. Which tasks are cancelled is said in Redis (a key a task, kept a week, longer than any queue
wait), which the worker reads first. A task already running finishes. A batch's images with no message
yet (their chunk not dispatched) end in PostgreSQL at once: see end_undispatched.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from . import db
from .db import reads, writes

CANCELLED = "cvunet:cancelled:"
TTL_S = 7 * 24 * 3600
REASON = "cancelled by its owner before it ran"


def mark(client: redis.Redis, task_ids: Iterable[str]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.set(CANCELLED + str(task_id), 1, ex=TTL_S)
        pipe.execute()


def is_cancelled(client: redis.Redis, task_id: str) -> bool:
    return bool(client.exists(CANCELLED + task_id))


def clear(client: redis.Redis, task_ids: Iterable[str]) -> None:
    """Before a retry: asked to run again, it runs (an operator's bulk requeue leaves the marks)."""
    keys = [CANCELLED + str(t) for t in task_ids]
    if keys:
        client.delete(*keys)


def _batch_key(batch_id) -> str:
    return f"{CANCELLED}batch:{batch_id}"


def batch_cancelled(client: redis.Redis, batch_id) -> bool:
    """Whether the batch was cancelled: a folder's listing then records no more of it."""
    return bool(client.exists(_batch_key(batch_id)))


def cancel(client: redis.Redis, batch_id=None, task_id=None) -> int:
    """Cancel a batch's tasks that have not started, or one task: how many were cancelled.

    A batch is marked first, then its rows are read: a folder's page recorded after that read was
    recorded after the mark, and its listing, which looks for the mark after each page, cancels it."""
    if batch_id is not None:
        client.set(_batch_key(batch_id), 1, ex=TTL_S)
    with db.transaction() as cur:
        ids = reads.not_started(cur, batch_id=batch_id, task_id=task_id)
    mark(client, ids)
    if batch_id is not None:
        end_undispatched(batch_id)
    return len(ids)


def end_undispatched(batch_id) -> int:
    """End at once, in PostgreSQL, the cancelled batch's images whose chunk was never dispatched: only
    the chunks already on the queue (two at most, see batch_lifecycle.WINDOW) wait for a worker to reach
    them, and the batch ends when they have (the chain skips chunks with nothing left to run), not
    after the whole folder's messages were drained behind everyone else's work. Their ids are marked
    first (mark): a chunk dispatched meanwhile ends them the usual way, as cancelled too."""
    with db.transaction() as cur:
        return writes.cancel_undispatched(cur, batch_id, REASON)
