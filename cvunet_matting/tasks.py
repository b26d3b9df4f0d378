"""Celery tasks: transport, ids and retries only; the work lives in `image_job` and `batch_lifecycle`."""

from __future__ import annotations

import logging
import random

import psycopg2
from celery.exceptions import SoftTimeLimitExceeded

from . import batch_lifecycle, image_job, signals
from .celery_app import app
from .config import get_settings
from .dispatch import CHUNK_DONE, FINALIZE_BATCH, MATTE_IMAGE
from .errors import ImageFailed, InputError
from .model import get_session
from .redis_client import count_attempt
from .storage import Storage

MAX_RETRIES = 3
log = logging.getLogger(__name__)


def backoff(retries: int) -> float:
    """Exponential backoff with full jitter: 2, 4, 8 s ceilings."""
    return random.uniform(0, 2 ** (retries + 1))


@app.task(bind=True, name=MATTE_IMAGE)
def matte_image(self, input_key: str, options: dict, output_path: str, batch_id: str | None = None) -> dict:
    """One image's outcome. In a batch a failure is returned, so the chord completes; a lone image's
    failure is raised, so Celery and Flower show the task as failed. Either way its row is written
    by `signals.mirror_end`, the one writer of a task's final state."""
    outcome = signals.mirror_end(run_image(self, input_key, options, output_path, batch_id))
    if outcome["state"] == "failure" and batch_id is None:
        raise ImageFailed(outcome["error"])
    return outcome


def run_image(task, input_key: str, options: dict, output_path: str, batch_id: str | None) -> dict:
    """The image's outcome as a dict (state success or failure); raises Retry, which Celery handles."""
    settings = get_settings()
    attempts = getattr(task.request, "cvunet_attempts", None) or count_attempt(task.request.id)
    base = {"task_id": task.request.id, "batch_id": batch_id, "attempts": attempts}
    crashes = attempts - 1 - task.request.retries
    if crashes >= settings.max_attempts:
        return failed(
            base, f"the worker process died {crashes} times on this input (out of memory or a crash); giving up"
        )
    try:
        fields = image_job.process(
            input_key,
            options,
            output_path,
            session=get_session(settings),
            storage=Storage(settings.data_dir),
            settings=settings,
        )
    except InputError as exc:
        return failed(base, exc.reason)
    except SoftTimeLimitExceeded:
        return failed(base, f"took longer than {settings.task_soft_limit}s")
    except image_job.TransientError as exc:
        if task.request.retries < MAX_RETRIES:
            raise task.retry(exc=exc, countdown=backoff(task.request.retries), max_retries=MAX_RETRIES) from exc
        return failed(base, f"gave up after {MAX_RETRIES} retries: {exc}")
    except Exception as exc:  # a bug must fail this image, not stall its whole batch
        log.exception("unexpected error on task %s", task.request.id)
        return failed(base, f"internal error: {exc!r}")
    return {**base, **fields, "state": "success"}


def failed(base: dict, error: str) -> dict:
    return {**base, "state": "failure", "error": error}


# Bookkeeping tasks wait out a PostgreSQL outage instead of stalling the batch.
DB_RETRY = {
    "autoretry_for": (psycopg2.OperationalError, psycopg2.InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 30,
    "max_retries": 40,
}


@app.task(name=CHUNK_DONE, **DB_RETRY)
def chunk_done(batch_id: str, idx: int) -> None:
    """A chunk's chord completed: dispatch the next chunk, or finalize when none is left."""
    batch_lifecycle.on_chunk_done(batch_id, idx)


@app.task(name=FINALIZE_BATCH, **DB_RETRY)
def finalize_batch(batch_id: str) -> dict:
    return batch_lifecycle.finalize(batch_id)
