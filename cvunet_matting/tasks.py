"""Celery tasks: transport, ids and retries only; the work lives in `image_job` and `batch_lifecycle`."""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg2
from celery.exceptions import Ignore, SoftTimeLimitExceeded

from .celery_app import app
from .config import Settings, get_settings
from .errors import ErrorCode, ImageFailed, InputError
from .pipeline import batch_lifecycle, cancelling, finish, render_job
from .pipeline.dispatch import CHUNK_DONE, FINALIZE_BATCH, LIST_FOLDER, MATTE_IMAGE, RENDER_IMAGE
from .states import FailureCode, TaskState
from .storage import result_backend
from .storage.files import Storage, StorageAway
from .storage.redis_client import end_run, get_redis, input_crashes_key
from .worker import image_job, signals
from .worker.device_client import DeviceLost, overlapped, worker_session
from .worker.faults import inject_faults
from .worker.image_run import DatabaseAway, ImageRun, ImageTask, write_start

log = logging.getLogger(__name__)
STORAGE_BACKOFF_MAX_S = 30
DEVICE_LOST_EXIT = 75


def storage_backoff(retries: int) -> float:
    """The retry's nominal delay: 2, 4, 8, 16, then every 30 s."""
    return float(min(STORAGE_BACKOFF_MAX_S, 2 ** (retries + 1)))


def storage_retry_left(retries: int, budget_s: float) -> bool:
    """Whether another retry still fits in the budget (the delays spent so far, at their nominal value)."""
    return sum(storage_backoff(n) for n in range(retries)) < budget_s


# No retry count: a storage retry is bounded by its time budget (CVUNET_STORAGE_RETRY_S), crashes by
# the attempt counter. Celery's default (3) would end a storage retry after ~15 s, as a failure.
# ImageFailed is the image's own verdict (a refused input, say): Celery logs it in a line, as
# expected, not as an error with a traceback; the task still ends FAILURE for Flower and the mirror.
@app.task(bind=True, base=ImageTask, name=MATTE_IMAGE, max_retries=None, throws=(ImageFailed,))
def matte_image(
    self: ImageTask,
    input_key: str = "",
    options: dict | None = None,
    output_path: str = "",
    batch_id: str | None = None,
    owner: int | None = None,
) -> dict:
    """One image's outcome. In a batch a failure is returned, so the chord completes; a lone image's
    failure is raised, so Celery and Flower show the task as failed. Either way its row is written
    by `signals.mirror_end` (a success's by `mirror_end_if_wanted`), the one writer of a task's final
    state, and only by the run that finishes the task first (a message can run twice when its worker was declared dead).

    The arguments are the message's copies of the task's row, shown by Flower and ignored here: the
    run works on what the row itself says (image_run.py), so a message can run its own task only."""
    try:
        with self.begin_run() as run:  # Ignore when another run finished this task already
            return finish_run(self, run)
    except DatabaseAway as exc:  # the row cannot be read: wait for PostgreSQL, however long
        raise self.retry(exc=exc, countdown=storage_backoff(self.request.retries)) from exc


def finish_run(task: ImageTask, run: ImageRun) -> dict:
    outcome = run_image(task, run)
    write_start(run)  # a run that ended before its result lookup shows its start before its end
    owner = f"{task.request.hostname}/{os.getpid()}"
    # After a success its bytes ran to the end: a later crash on them starts a new count.
    forgive = input_crashes_key(run.job.input_key) if outcome["state"] == TaskState.SUCCESS else None

    def end_and_claim(key: str, ttl: int) -> bool:
        """The run's end counted, its input forgiven, the claim taken: one round trip, not three."""
        claimed = end_run(run.task_id, key, owner, forgive, ttl)
        run.end.counted = True
        return claimed

    # A success wrote its file: kept only while its row wants it, asked once the file is written.
    wrote = outcome["state"] == TaskState.SUCCESS
    try:
        claimed = finish.claim(get_redis(), app, run.task_id, owner=owner, first_try=end_and_claim)
    except BaseException:
        drop_unless_wanted(run, wrote)  # Redis away for minutes: the run ends unfinished
        raise
    if not claimed:
        drop_unless_wanted(run, wrote)
        raise Ignore()
    result_backend.hold_claim(run.task_id)  # its success is stored without reading the state first
    if not wrote:
        signals.mirror_end(outcome)
    elif not signals.mirror_end_if_wanted(outcome):  # the end and "still wanted?": one round trip
        image_job.discard(written_by(run))
        log.warning("task %s: %s", run.task_id, image_job.NoLongerWanted(run.task_id))
        raise Ignore()
    if outcome["state"] == TaskState.FAILURE and run.job.batch_id is None:
        raise ImageFailed(outcome["error"])
    return outcome


def drop_unless_wanted(run: ImageRun, wrote: bool) -> None:
    """For a run that writes no end: the file it wrote removed if its row went meanwhile."""
    if not wrote:
        return
    try:
        image_job.keep_only_if_wanted(run.job, written_by(run))
    except image_job.NoLongerWanted as exc:
        log.warning("task %s: %s", run.task_id, exc)


def written_by(run: ImageRun) -> Path:
    """Where a successful run of the task wrote its result."""
    return image_job.output_target(Storage(get_settings().data_dir), run.job.output_path)


def run_image(task: ImageTask, run: ImageRun) -> dict:
    """The image's outcome as a dict (state success or failure); raises Retry, which Celery handles."""
    settings = get_settings()
    if overlapped():
        settings = replace(settings, encode_threads=1)  # the pool's processes are the parallelism
    base = {"task_id": run.task_id, "batch_id": run.job.batch_id, "attempts": run.attempts}
    if run.cancelled:  # before the input is read or the model touched
        return failed(base, FailureCode.CANCELLED, cancelling.REASON)
    # Runs that started before this one and never ended: their process died (a crash, out of memory).
    # Not `retries`: a second copy of the message (a republish) is a run that ends, not a crash. Counted
    # per input (begin_run, redis_client.begin_run): the same bytes sent again as a new task fail at once
    # instead of crashing workers anew.
    crashes = run.crashes
    if crashes >= settings.max_attempts:
        reason = f"the worker process died {crashes} times on this input (out of memory or a crash); giving up"
        return failed(base, FailureCode.CRASHED, reason)
    try:
        fields = image_job.process(
            run.job,
            # An image in hand when a worker died before runs alone on the device: never batched with
            # (and so never crashing) its neighbours again.
            session=worker_session(settings, alone=crashes > 0),
            storage=Storage(settings.data_dir),
            settings=settings,
            start=run.start,  # written with the result lookup, one round trip for both
        )
    except InputError as exc:
        empty = exc.code == ErrorCode.EMPTY_SUBJECT  # the input is fine: these options found nothing to crop to
        return failed(base, FailureCode.EMPTY_SUBJECT if empty else FailureCode.REFUSED, exc.reason)
    except DeviceLost as exc:
        # The model's process died with this image in hand (a crash, perhaps on this very input):
        # this pool process goes too, so Celery requeues the image as it does after any crash, and
        # the next start counts it against the poison-input cap.
        log.error("task %s: %s; leaving it to be redelivered", task.request.id, exc)
        os._exit(DEVICE_LOST_EXIT)
    except SoftTimeLimitExceeded:
        return failed(base, FailureCode.TIMEOUT, f"took longer than {settings.task_soft_limit}s")
    except image_job.TransientError as exc:
        if storage_retry_left(task.request.retries, settings.storage_retry_s):
            delay = storage_backoff(task.request.retries) * random.uniform(0.75, 1.0)
            raise task.retry(exc=exc, countdown=delay) from exc
        return failed(base, FailureCode.STORAGE, f"gave up after {settings.storage_retry_s}s of retries: {exc}")
    except Exception as exc:  # a bug must fail this image, not stall its whole batch
        log.exception("unexpected error on task %s", task.request.id)
        return failed(base, FailureCode.INTERNAL, f"internal error: {exc!r}")
    return {**base, **fields, "state": TaskState.SUCCESS}  # its input is forgiven with the claim (finish_run)


def failed(base: dict, code: FailureCode, error: str) -> dict:
    """A failure, with `code` telling the operator what kind: refused inputs are not worth requeueing."""
    return {**base, "state": TaskState.FAILURE, "error_code": code, "error": error}


# Bookkeeping tasks wait out a PostgreSQL outage instead of stalling the batch.
DB_RETRY: dict[str, Any] = {
    "autoretry_for": (psycopg2.OperationalError, psycopg2.InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "max_retries": 40,
}


@app.task(name=CHUNK_DONE, **DB_RETRY)
def chunk_done(batch_id: str, idx: int) -> None:
    """A chunk's chord completed: dispatch the next chunk, or finalize when none is left."""
    batch_lifecycle.on_chunk_done(batch_id, idx)


def storage_spent(since: float | None, settings: Settings) -> bool:
    """Whether storage has been away longer than its budget, since the first failure `since` (Unix time)."""
    return since is not None and time.time() - since >= settings.storage_retry_s


def retry_storage(task, exc: StorageAway, since: float | None, **kwargs: Any):
    """A bookkeeping task's retry while storage is away: the first failure's time travels with it, and
    the budget (CVUNET_STORAGE_RETRY_S), not Celery's retry count, decides when it gives up."""
    since = since or time.time()
    delay = storage_backoff(task.request.retries) * random.uniform(0.75, 1.0)
    log.warning("%s: %s; trying again in %.0f s", task.name, exc, delay)
    try:  # raises Retry; the count is let through, whatever max_retries says
        return task.retry(
            exc=exc, countdown=delay, kwargs={**kwargs, "storage_since": since}, max_retries=task.request.retries + 1
        )
    finally:
        # Celery keeps a max_retries given here on the task object, where this process's later
        # autoretries (a database outage: DB_RETRY) would take it for theirs.
        vars(task).pop("override_max_retries", None)


@app.task(
    bind=True,
    name=FINALIZE_BATCH,
    **{**DB_RETRY, "autoretry_for": (*DB_RETRY["autoretry_for"], batch_lifecycle.NotReady)},
)
def finalize_batch(self, batch_id: str, rebuild: bool = False, storage_since: float | None = None) -> dict:
    """Write the batch's manifest and ZIP once every row is final and its folder can be written
    (`rebuild`: again, for a finished batch whose ZIP was lost)."""
    give_up = storage_spent(storage_since, get_settings())
    try:
        return batch_lifecycle.finalize(batch_id, rebuild=rebuild, give_up=give_up)
    except StorageAway as exc:
        raise retry_storage(self, exc, storage_since, rebuild=rebuild) from exc


@app.task(bind=True, name=LIST_FOLDER, **DB_RETRY)
def list_folder(self, batch_id: str, storage_since: float | None = None) -> dict:
    """Record a folder batch's images a chunk at a time, dispatching them as it goes (folder_listing.py)."""
    from .pipeline.folder_listing import list_folder as record_listing

    give_up = storage_spent(storage_since, get_settings())
    try:
        return record_listing(batch_id, give_up=give_up)
    except StorageAway as exc:  # the inputs cannot be stored: resumed after the pages recorded so far
        raise retry_storage(self, exc, storage_since) from exc
    except SoftTimeLimitExceeded:
        # A very large folder: carry on in a fresh run, which resumes after the pages recorded so far.
        raise self.retry(countdown=0) from None


@app.task(bind=True, name=RENDER_IMAGE, **DB_RETRY)
def render_image(self, task_id: str, storage_since: float | None = None) -> dict:
    """One image of a batch re-render, drawn from its source's raw matte (render_job.py): no model. Its
    outcome is returned, failure included, so that its chunk's chord completes."""
    settings = get_settings()
    give_up = storage_spent(storage_since, settings)
    worker = f"{self.request.hostname}/{os.getpid()}"
    try:
        return render_job.run(
            task_id, worker, settings, retries=self.request.retries, give_up=give_up, before=inject_faults
        )
    except StorageAway as exc:
        raise retry_storage(self, exc, storage_since) from exc
