"""Celery signal handlers: mirror every matte_image event into PostgreSQL, warm workers up.

A run's start and its end are written by the task itself (its start with its result lookup,
`start_event`, image_job.py; its end by `mirror_end`, a success's with "still wanted?" by
`mirror_end_if_wanted`, from tasks.py); the handlers here write what
happens around it (a retry, a failure that escaped it) and tell the waiters once a final row is
committed."""

from __future__ import annotations

import logging
import threading

import kombu.exceptions
import psycopg2
import redis
from celery import signals
from celery.exceptions import Retry

from cvunet_matting.config import get_settings
from cvunet_matting.db import reads
from cvunet_matting.errors import ImageFailed
from cvunet_matting.pipeline import notify
from cvunet_matting.pipeline.dispatch import MATTE_IMAGE
from cvunet_matting.pipeline.mirror import get_mirror, now_iso
from cvunet_matting.states import FailureCode, TaskState
from cvunet_matting.storage import result_backend

from . import metrics as worker_metrics
from .faults import install_storage_faults

log = logging.getLogger(__name__)
REDIS_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, kombu.exceptions.OperationalError)
RESULT_FIELDS = (
    "idem_key",
    "model_version",
    "reused",
    "width",
    "height",
    "timings",
    "confidence",
    "error",
    "error_code",
    "attempts",
)
# Tasks whose success this process has mirrored: a later failure to store the result in Redis
# (a restart at that moment) must not turn them into failed images.
_succeeded: set[str] = set()
# Tasks whose final row was committed before the task returned (mirror_end_if_wanted): Celery's own
# PUBLISH of the result, in the pipeline that stores it (notify.py), comes after that commit and
# tells the waiters, so `publish_done` would say it again: a Redis round trip an image for nothing.
_announced: set[str] = set()


def _record(event: dict) -> None:
    try:
        get_mirror().record(event)
    except Exception:  # the mirror must never fail a task; the event is logged instead
        log.exception("could not mirror event %s", event)


def start_event(task_id: str, attempts: int, worker: str | None) -> dict:
    """A run's start (image_run.py decides which runs show one). It is written with the run's result
    lookup (image_job.lookup_result: one round trip for both), or by `mirror_start` for a run that
    ends before its lookup."""
    return {
        "task_id": task_id,
        "state": TaskState.STARTED,
        "attempts": attempts,
        "worker": worker,
        "started_at": now_iso(),
        "at": now_iso(),
        "error": None,
    }


def mirror_start(event: dict) -> None:
    """A start event not written with a lookup, written in the background: the events recorded after
    it (the run's end) keep their order."""
    get_mirror().record_later(event)


@signals.task_retry.connect
def on_retry(request=None, reason=None, **_):
    if request is not None and request.task == MATTE_IMAGE:
        _record({"task_id": request.id, "state": TaskState.RETRY, "error": str(reason)})


def mirror_end(result: dict) -> dict:
    """The task's end event (success or failure): the one writer of a task's final row.

    Its write starts now, in the background, while Celery stores the same result in Redis; the
    success signal waits for it, so it is committed (or spooled) before the task is acknowledged.
    """
    get_mirror().record_later(end_event(result))
    return result


def mirror_end_if_wanted(result: dict) -> bool:
    """A success's end event, as `mirror_end` writes it, and whether the task's row still wants the
    file the run wrote (not deleted, not expired: image_job.keep_only_if_wanted), read after the end
    in the same round trip: they were two round trips and two transactions on every image's path. The
    end lands on no deleted or expired row (writes.event_statements). Written now, not in the
    background: the caller drops the run when its row went. True when PostgreSQL cannot say (the end
    is spooled), as image_job.still_wanted."""
    task_id = result["task_id"]
    try:
        committed, row = get_mirror().record_then_read_told(end_event(result), reads.wanted_query(task_id))
    except (psycopg2.Error, OSError) as exc:
        log.warning("could not check that task %s is still wanted: %s", task_id, exc)
        return True
    if committed:
        _announced.add(task_id)
    return row is not None and bool(row["wanted"])


def end_event(result: dict) -> dict:
    event = {"task_id": result["task_id"], "state": result["state"], "finished_at": now_iso()}
    event.update({k: result[k] for k in RESULT_FIELDS if k in result})
    if result["state"] == TaskState.SUCCESS:
        _succeeded.add(result["task_id"])
        event["error"] = None
        event["error_code"] = None
        if not result.get("reused"):
            event["result"] = {k: result[k] for k in ("idem_key", "output_path", "task_id", "width", "height")}
            event["result"]["confidence"] = result.get("confidence")
    return event


@signals.task_success.connect
def on_success(sender=None, result=None, **_):
    if sender is None or sender.name != MATTE_IMAGE or not isinstance(result, dict):
        return
    worker_metrics.observe(result)
    get_mirror().wait_background()
    if result["task_id"] not in _announced:
        notify.publish_done(result["task_id"], result.get("batch_id"))  # its row is committed: wake the waiters


@signals.task_failure.connect
def on_failure(sender=None, task_id=None, exception=None, **_):
    """A lone image's failure was mirrored by the task; anything else that escaped it is, here."""
    if sender is None or sender.name != MATTE_IMAGE or isinstance(exception, Retry):
        return
    if task_id in _succeeded:  # the image succeeded; only Celery's own result write failed
        log.warning("task %s succeeded but its result was not stored in Redis: %s", task_id, exception)
    elif isinstance(exception, REDIS_UNREACHABLE):
        # Cut off from Redis, this worker cannot finish the task: it is not over. Its message is
        # returned to the queue by another worker's watchdog (or the visibility timeout).
        log.warning("task %s left unfinished, Redis unreachable: %s", task_id, exception)
    elif not isinstance(exception, ImageFailed):
        mirror_end(
            {
                "task_id": task_id,
                "state": TaskState.FAILURE,
                "error_code": FailureCode.INTERNAL,
                "error": str(exception),
            }
        )
    get_mirror().wait_background()
    if not isinstance(exception, REDIS_UNREACHABLE):
        notify.publish_done(task_id)


@signals.task_postrun.connect
def on_postrun(task_id=None, **_):
    _succeeded.discard(task_id)
    _announced.discard(task_id)
    result_backend.release_claim(task_id)


@signals.worker_process_init.connect
def on_process_init(**_):
    """After fork: start the spool flusher and load the model in the background (not in the 4 s window)."""
    from cvunet_matting.malloc import tune_for_large_buffers

    from .device_client import one_thread_each, overlapped, worker_session

    tune_for_large_buffers()
    install_storage_faults(get_settings().data_dir)  # the storage tests' read-only data root; nothing otherwise
    get_mirror().start_flusher()
    if get_settings().worker_role == "bookkeeping":
        return  # no model, no device, no worker metrics: the batches' callbacks only
    if overlapped():
        one_thread_each(get_settings())
    try:
        worker_metrics.serve(get_settings().metrics_port, get_settings().metrics_addr)
    except OSError as exc:  # a restarted child may find the port still held briefly
        log.warning("worker metrics not served: %s", exc)
    threading.Thread(target=_warm, args=(worker_session,), name="model-warmup", daemon=True).start()


def _warm(get_session) -> None:
    try:
        get_session()
    except Exception:
        log.exception("model warm-up failed; tasks will report the error")
