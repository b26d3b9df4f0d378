"""Cancelling work that has not started: its owner changed their mind (a folder of 10,000 sent by mistake).

A cancelled image ends at once: its row fails, code `cancelled` (its owner sees it, its quota is free
again, and a retry runs it after all), and its id is marked in Redis (a key a task, kept a week, longer
than any queue wait) first. Its message, if it has one, stays on the queue: the worker that receives
it reads the mark before anything else, records no start, and ends it the same way without reading its
input or touching the model, so its batch's chord counts it like any other and the batch finishes (its
ZIP holds what was done). A batch's images whose chunk was never dispatched have no message yet: the
chunk chain skips them. A task already running finishes.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from cvunet_matting import db
from cvunet_matting.db import reads, writes

from . import notify

CANCELLED = "cvunet:cancelled:"
TTL_S = 7 * 24 * 3600
REASON = "cancelled by its owner before it ran"


def mark(client: redis.Redis, task_ids: Iterable[str]) -> None:
    """Mark the ids in Redis, then end their rows: a worker that receives one of them after the mark
    drops it, and one that started before runs it to its end (its success overwrites the row)."""
    ids = [str(t) for t in task_ids]
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.set(CANCELLED + task_id, 1, ex=TTL_S)
        pipe.execute()
    if ids:
        with db.transaction() as cur:
            writes.end_cancelled(cur, ids, REASON)


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
    if ids:  # wake the pages waiting on it, or on its batch
        notify.publish_done(ids[0], str(batch_id) if batch_id is not None else None, client)
    return len(ids)
