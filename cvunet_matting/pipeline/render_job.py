"""One image of a batch re-render, on the bookkeeping worker: drawn again from its source task's kept
raw matte and input (image/rendering.py), never by the model.

The task's row says what to do (its source in `rendered_from`, its options, its output path); the
message carries only its id. A run is safe to repeat: the files are written atomically under the
row's own path, the row is ended once (writes.end_render, by the first run to end it), and a run that
finds its row final already does nothing. So a run whose worker was killed is simply run again when
its message comes back (late ack); runs that began and never ended are counted (writes.start_render),
and an input that kills the worker CVUNET_MAX_ATTEMPTS times fails, code `crashed`, as on the model
workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded

from cvunet_matting import db
from cvunet_matting.config import Settings
from cvunet_matting.db import reads, writes
from cvunet_matting.db.rows import TaskRow
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.rendering import Rendered, render
from cvunet_matting.image.reuse_key import idem_key
from cvunet_matting.states import FailureCode, TaskState
from cvunet_matting.storage.files import Storage, StorageAway, raw_matte_path, result_files, write_atomic

from . import notify

log = logging.getLogger(__name__)
THREADS = 1  # PNG strips per render: the bookkeeping worker's processes are its parallelism
TEMP_PREFIX = ".raw."  # as the model worker's: `.NAME.raw.png` plus atomic_file's own could pass 255 bytes
NO_MATTE = (
    "this result has no raw matte to render from (it was made before mattes were kept, or its files were"
    " removed): submit the image again"
)
SOURCE_GONE = "the image this render draws from was deleted or removed by retention: submit the image again"
SOURCE_FAILED = "the image this render draws from did not succeed: there is no cut-out to render again"


def source_files(storage: Storage, source: TaskRow) -> tuple[bytes, bytes]:
    """A finished task's input and raw matte, each read once: InputError no_matte when either is gone,
    StorageAway when storage cannot be read now."""
    try:
        matte = raw_matte_path(storage.resolve(source["output_path"])).read_bytes()
        data = storage.read_input(source["input_key"])
    except (FileNotFoundError, ValueError):  # ValueError: no input key (nothing was stored)
        raise InputError(NO_MATTE, code=ErrorCode.NO_MATTE) from None
    except OSError as exc:
        raise StorageAway(f"cannot read a stored matte or input: {exc.strerror or exc}") from exc
    return data, matte


def unrenderable(source: TaskRow | None) -> str | None:
    """Why a task cannot be drawn again (its row alone tells), or None."""
    if source is None or source["deleted_at"] or source["expired_at"]:
        return SOURCE_GONE
    if source["state"] != TaskState.SUCCESS:
        return SOURCE_FAILED
    return None


def no_faults(input_key: str) -> None:
    """What a production run does before it draws an image (the fault tests' hook: worker/faults.py)."""


def run(
    task_id: str,
    worker: str,
    settings: Settings,
    retries: int = 0,
    give_up: bool = False,
    before: Callable[[str], None] = no_faults,
) -> dict:
    """Render the task and end its row; the outcome (its final state, or the state found when another
    run ended it). `retries`: storage retries so far (runs that ended, not crashes). Raises StorageAway
    while storage cannot be read or written, unless `give_up` (then the image fails, code `storage`).
    `before` is called with the input's key once the files are read, before the image is drawn."""
    with db.transaction() as cur:
        row = reads.get_task(cur, task_id)
        attempts = writes.start_render(cur, task_id, worker) if row else None
        source = reads.get_task(cur, row["rendered_from"]) if row and row["rendered_from"] else None
    if row is None or attempts is None:  # deleted, expired, or ended by another run
        return {"task_id": task_id, "batch_id": None, "state": row["state"] if row else None}
    base = {"task_id": task_id, "batch_id": str(row["batch_id"]) if row["batch_id"] else None}
    storage = Storage(settings.data_dir)
    if attempts - 1 - retries >= settings.max_attempts:
        reason = f"the worker process died {attempts - 1 - retries} times on this image; giving up"
        return end(storage, row, failed(base, FailureCode.CRASHED, reason))
    try:
        outcome = draw(storage, row, source, settings, before)
    except InputError as exc:
        code = FailureCode.NO_MATTE if exc.code == ErrorCode.NO_MATTE else FailureCode.REFUSED
        outcome = failed(base, code, exc.reason)
    except StorageAway as exc:
        if not give_up:
            raise
        outcome = failed(base, FailureCode.STORAGE, f"gave up after {settings.storage_retry_s}s of retries: {exc}")
    except SoftTimeLimitExceeded:
        outcome = failed(base, FailureCode.TIMEOUT, f"took longer than {settings.task_soft_limit}s")
    except Exception as exc:  # a bug must fail this image, not stall its chunk (and be republished forever)
        log.exception("unexpected error rendering task %s", task_id)
        outcome = failed(base, FailureCode.INTERNAL, f"internal error: {exc!r}")
    return end(storage, row, {**base, **outcome})


def draw(
    storage: Storage, row: TaskRow, source: TaskRow | None, settings: Settings, before: Callable[[str], None]
) -> dict:
    """Render and write the task's files (its raw matte, so it can be drawn again in turn, then its
    result): the success's fields. Raises InputError (no_matte, or a refused input), StorageAway."""
    reason = unrenderable(source)
    if reason or source is None:
        raise InputError(reason or SOURCE_GONE, code=ErrorCode.NO_MATTE)
    clock = time.perf_counter()
    data, matte = source_files(storage, source)
    read_s = time.perf_counter() - clock
    before(source["input_key"])
    clock = time.perf_counter()
    rendered = render(data, matte, OutputOptions.from_dict(row["options"]), settings.max_pixels, THREADS)
    render_s, clock = time.perf_counter() - clock, time.perf_counter()
    write(storage.root / row["output_path"], matte, rendered)
    timings = {"read": read_s, "render": render_s, "write": time.perf_counter() - clock}
    return {
        "state": TaskState.SUCCESS,
        "width": rendered.width,
        "height": rendered.height,
        "confidence": source.get("confidence"),  # the same raw matte, the same score
        "model_version": source.get("model_version"),
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }


def write(target: Path, matte: bytes, rendered: Rendered) -> None:
    try:
        write_atomic(raw_matte_path(target), matte, temp_prefix=TEMP_PREFIX)
        write_atomic(target, rendered.data)
    except OSError as exc:
        raise StorageAway(f"cannot write a rendered result: {exc.strerror or exc}") from exc


def register(cur, row: TaskRow, outcome: dict) -> None:
    """The render's result, for reuse by the same owner's identical task (image/reuse_key.py)."""
    version = outcome["model_version"]
    key = idem_key(row["input_key"], version, OutputOptions.from_dict(row["options"]), row["owner_id"])
    size = (outcome["width"], outcome["height"])
    writes.register_result(cur, row["id"], key, version, row["output_path"], size, outcome.get("confidence"))


def failed(base: dict, code: FailureCode, error: str) -> dict:
    return {**base, "state": TaskState.FAILURE, "error_code": code, "error": error}


def end(storage: Storage, row: TaskRow, outcome: dict) -> dict:
    """The row ended with `outcome`, by this run alone, and its waiters told. A run that lost the race
    (the task was deleted or expired meanwhile) removes what it wrote, unless the row still names it."""
    with db.transaction() as cur:
        ended = writes.end_render(cur, row["id"], outcome)
        now = reads.get_task(cur, row["id"]) if not ended else None
        if ended and outcome.get("model_version"):
            register(cur, row, outcome)
    if not ended:
        if now is None or now["expired_at"]:
            for path in result_files(storage.root / row["output_path"]):
                path.unlink(missing_ok=True)
        return {**outcome, "state": now["state"] if now else None}
    notify.publish_done(outcome["task_id"], outcome.get("batch_id"))
    return outcome
