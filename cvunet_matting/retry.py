"""Retry one failed task from the web: the `requeue` verb for a single row."""

from __future__ import annotations

from . import db, jobs, queries
from .celery_app import app
from .redis_client import reset_attempts
from .requeue import republish


def retry_task(task_id) -> str:
    """Requeue a failed task under its own id: 'requeued', 'not_found' or 'not_failed'."""
    with db.transaction() as cur:
        row = queries.lock_task(cur, task_id)  # two clicks at once requeue it once
        if row is None:
            return "not_found"
        if row["state"] != "failure":
            return "not_failed"
        jobs.reset_for_requeue(cur, [row["id"]])
        if row["batch_id"]:
            jobs.reopen_batches(cur, [row["batch_id"]])  # its ZIP and manifest are rebuilt
    reset_attempts([str(row["id"])])
    # By name: the web process never imports the tasks module (nor, through it, the model's).
    republish(
        [row], lambda batch, _chunk: app.signature("cvunet_matting.finalize_batch", args=(batch,), immutable=True)
    )
    return "requeued"
