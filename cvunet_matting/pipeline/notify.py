"""Telling waiting web requests that a task ended: the channels they listen on, and the publisher.

Celery's Redis result backend already PUBLISHes every state it stores on the result's own key,
`celery-task-meta-<task id>` (celery/backends/redis.py, RedisBackend._set: SET then PUBLISH in one
pipeline), with the result as JSON; a matte_image result names its task and batch, finalize_batch's
its batch. That is what waiting requests hear today. A failure's comes a few milliseconds before the
task's PostgreSQL row is committed (signals.mirror_end writes it in the background), so a waiter
re-reads briefly after it (waiting.SETTLE_S). `publish_done`, called by the worker once the final row
is committed, says the same on `cvunet:done:<task id>` when the row is certainly there. An image's
success is committed before the task returns (signals.mirror_end_if_wanted), so Celery's own message
comes after the commit already and the worker sends no second one.
"""

from __future__ import annotations

import json
import logging

import redis

from cvunet_matting.storage.redis_client import get_redis

log = logging.getLogger(__name__)

CELERY_PATTERN = "celery-task-meta-*"
DONE_PREFIX = "cvunet:done:"
PATTERNS = (CELERY_PATTERN, DONE_PREFIX + "*")
FINAL_CELERY_STATES = frozenset({"SUCCESS", "FAILURE"})


def publish_done(task_id: str, batch_id: str | None = None, client: redis.Redis | None = None) -> None:
    """Wake the requests waiting on `task_id` (and on its batch); never fails the task."""
    try:
        (client or get_redis()).publish(DONE_PREFIX + task_id, json.dumps({"task_id": task_id, "batch_id": batch_id}))
    except redis.RedisError as exc:  # waiters still re-read on their own every few seconds
        log.warning("could not announce the end of %s: %s", task_id, exc)


def ids_in(channel: str, data: bytes | str) -> tuple[set[str], bool]:
    """The task and batch ids a message names, and whether it announces an end (success or failure)."""
    try:
        meta = json.loads(data)
    except ValueError:
        meta = None
    meta = meta if isinstance(meta, dict) else {}
    if channel.startswith(DONE_PREFIX):
        ids, final = {channel.removeprefix(DONE_PREFIX)}, True
    else:
        ids, final = {channel.removeprefix("celery-task-meta-")}, meta.get("status") in FINAL_CELERY_STATES
    result = meta.get("result") if channel.startswith("celery") else meta
    if isinstance(result, dict):
        ids |= {str(result[k]) for k in ("task_id", "batch_id") if result.get(k)}
    return ids, final
