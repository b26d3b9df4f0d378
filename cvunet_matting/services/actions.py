"""What an actor may do to work they can see: retry a failure, cancel what has not started, delete
what has finished. Each finds the work through `lookup` first, so a stranger's id is `not_found`."""

from __future__ import annotations

from cvunet_matting.accounts.users import Actor
from cvunet_matting.cleanup import deleting
from cvunet_matting.config import Settings
from cvunet_matting.db.rows import TaskRow
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.pipeline import cancelling
from cvunet_matting.recovery.requeue import retry_task
from cvunet_matting.states import FailureCode, TaskState
from cvunet_matting.storage.files import Storage
from cvunet_matting.storage.redis_client import forgive_input, get_redis

from .lookup import batch_for, task_for


def check_retry(actor: Actor, row: TaskRow, force: bool) -> None:
    """Refuse a retry that cannot help: an expired task, an input that crashed the worker up to the cap
    (unless an admin forces it: each retry would cost as many crashes again; the cap counts the input's
    bytes, in whatever task, so a forced retry forgives them), a file refused on arrival
    (nothing was stored), an input refused for what it is (unless forced: a limit may have been raised)."""
    if row.get("expired_at"):
        raise InputError("this task expired: retention removed its files, its input too", code=ErrorCode.EXPIRED_TASK)
    if row["state"] != TaskState.FAILURE:
        return
    if row.get("error_code") == FailureCode.CRASHED and not (force and actor.is_admin):
        raise InputError(
            "this input crashed the worker process too many times; only an admin can force a retry",
            code=ErrorCode.POISON_INPUT,
        )
    if not row["input_key"]:
        raise InputError(
            "nothing was stored for this file (it was refused on arrival): send it again", code=ErrorCode.REFUSED_INPUT
        )
    if row.get("error_code") == FailureCode.REFUSED and not force:
        raise InputError(
            f"this input was refused for what it is ({row.get('error')}): it would fail the same way; submit a"
            " fixed file, or force a retry if a limit has been raised since",
            code=ErrorCode.REFUSED_INPUT,
        )


def retry(actor: Actor, task_id: str, force: bool = False) -> TaskRow:
    """Requeue the actor's failed task under its own id; returns its row as it was. Over a quota of the
    task's owner (in flight, or the day's files: a retry runs the image again), refused like new work."""
    row = task_for(actor, task_id)
    check_retry(actor, row, force)
    if row["state"] == TaskState.FAILURE and row.get("error_code") == FailureCode.CRASHED:  # an admin forced it
        forgive_input(row["input_key"])  # before the requeue: a worker that looked first would give up at once
    outcome = retry_task(row["id"], counted=True)  # checked and counted like a new image, under the owner's lock
    if outcome == "expired":
        raise InputError("this task expired or was deleted meanwhile: its files are gone", code=ErrorCode.EXPIRED_TASK)
    if outcome != "requeued":
        raise InputError(
            f"task {task_id} is {row['state']}: only failed tasks can be retried", code=ErrorCode.NOT_FAILED
        )
    return row


def cancel_task(actor: Actor, task_id: str) -> dict:
    """Cancel the actor's task if no worker has started it (`not_pending` otherwise)."""
    row = task_for(actor, task_id)
    if not cancelling.cancel(get_redis(), task_id=row["id"]):
        raise InputError(
            f"task {task_id} is {row['state']}: only work no worker has started can be cancelled",
            code=ErrorCode.NOT_PENDING,
        )
    return {"task_id": str(row["id"]), "cancelled": 1}


def cancel_batch(actor: Actor, batch_id: str) -> dict:
    """Cancel what the actor's batch has not started; what runs finishes, and the batch ends as usual."""
    batch = batch_for(actor, batch_id).batch
    return {"batch_id": str(batch["id"]), "cancelled": cancelling.cancel(get_redis(), batch_id=batch["id"])}


def delete_task(actor: Actor, task_id: str, settings: Settings) -> dict:
    """Delete the actor's finished task with its files (not one of a batch's: `in_batch`)."""
    row = task_for(actor, task_id)
    return deleting.delete_task(Storage(settings.data_dir), row["id"])


def delete_batch(actor: Actor, batch_id: str, settings: Settings) -> dict:
    """Delete the actor's finished batch, every image in it with it."""
    batch = batch_for(actor, batch_id).batch
    return deleting.delete_batch(Storage(settings.data_dir), batch["id"])
