"""Celery tasks: transport, ids and retries only; the work itself lives in `work` and `batches`."""

from __future__ import annotations

import logging
import random

import psycopg2
from celery.exceptions import SoftTimeLimitExceeded

from . import batches, signals, work
from .celery_app import app
from .config import get_settings
from .errors import InputError
from .model import get_session
from .redis_client import count_attempt
from .storage import Storage

MAX_RETRIES = 3
log = logging.getLogger(__name__)


class ImageFailed(Exception):
    """A single image (outside any batch) failed for good; the message is the reason."""


def backoff(retries: int) -> float:
    """Exponential backoff with full jitter: 2, 4, 8 s ceilings."""
    return random.uniform(0, 2 ** (retries + 1))


@app.task(bind=True, name="cvunet_matting.matte_image")
def matte_image(self, input_key: str, options: dict, output_path: str, batch_id: str | None = None) -> dict:
    return signals.mirror_end(run_image(self, input_key, options, output_path, batch_id))


def run_image(task, input_key: str, options: dict, output_path: str, batch_id: str | None) -> dict:
    """The image's outcome as a dict; raises ImageFailed (alone) or Retry, which Celery handles."""
    settings = get_settings()
    attempts = getattr(task.request, "cvunet_attempts", None) or count_attempt(task.request.id)
    base = {"task_id": task.request.id, "batch_id": batch_id, "attempts": attempts}
    crashes = attempts - 1 - task.request.retries
    if crashes >= settings.max_attempts:
        return finish(
            base,
            error=f"the worker process died {crashes} times on this input (out of memory or a crash); giving up",
            batch_id=batch_id,
        )
    try:
        fields = work.process(
            input_key,
            options,
            output_path,
            session=get_session(settings),
            storage=Storage(settings.data_dir),
            settings=settings,
        )
    except InputError as exc:
        return finish(base, error=exc.reason, batch_id=batch_id)
    except SoftTimeLimitExceeded:
        return finish(base, error=f"took longer than {settings.task_soft_limit}s", batch_id=batch_id)
    except work.TransientError as exc:
        if task.request.retries < MAX_RETRIES:
            raise task.retry(exc=exc, countdown=backoff(task.request.retries), max_retries=MAX_RETRIES) from exc
        return finish(base, error=f"gave up after {MAX_RETRIES} retries: {exc}", batch_id=batch_id)
    except Exception as exc:  # a bug must fail this image, not stall its whole batch
        log.exception("unexpected error on task %s", task.request.id)
        return finish(base, error=f"internal error: {exc!r}", batch_id=batch_id)
    return {**base, **fields, "state": "success"}


def finish(base: dict, error: str, batch_id: str | None) -> dict:
    """A failed image: in a batch, return the failure so the chord completes; alone, raise it."""
    if batch_id is None:
        raise ImageFailed(error)
    return {**base, "state": "failure", "error": error}


# Bookkeeping tasks wait out a PostgreSQL outage instead of stalling the batch.
DB_RETRY = {
    "autoretry_for": (psycopg2.OperationalError, psycopg2.InterfaceError),
    "retry_backoff": 2,
    "retry_backoff_max": 30,
    "max_retries": 40,
}


@app.task(name="cvunet_matting.chunk_done", **DB_RETRY)
def chunk_done(batch_id: str, idx: int) -> None:
    """A chunk's chord completed: dispatch the next chunk, or finalize when none is left."""
    batches.on_chunk_done(batch_id, idx)


@app.task(name="cvunet_matting.finalize_batch", **DB_RETRY)
def finalize_batch(batch_id: str) -> dict:
    return batches.finalize(batch_id)
