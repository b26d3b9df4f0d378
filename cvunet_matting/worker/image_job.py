"""What a worker does for one image: reuse an identical result or run the model, then store it."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psycopg2

from cvunet_matting import db
from cvunet_matting.config import Settings
from cvunet_matting.db import reads
from cvunet_matting.db.rows import ResultRow, TaskRow
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.matting import matte_bytes
from cvunet_matting.image.reuse_key import idem_key
from cvunet_matting.model.protocols import Session
from cvunet_matting.pipeline.mirror import get_mirror
from cvunet_matting.storage.files import Storage, raw_matte_path, write_atomic
from cvunet_matting.worker.faults import inject_faults

log = logging.getLogger(__name__)


# A short temporary name: `.NAME.raw.png` plus atomic_file's own `.part` could pass 255 bytes.
RAW_TEMP_PREFIX = ".raw."


class TransientError(Exception):
    """Worth retrying: shared storage hiccups and the like."""


class NoLongerWanted(Exception):
    """The task was deleted (or expired) while this run worked on it: what it wrote is removed again."""

    def __init__(self, task_id: str):
        super().__init__(f"task {task_id} was deleted or expired while it ran; its result was removed")


@dataclass
class RunStart:
    """A run's start event, not yet written: it goes to PostgreSQL with the run's first query (the
    result lookup) instead of in a round trip of its own. `take` hands it out once: whoever takes it
    writes it, and a run that ends before its lookup writes it before its end (image_run.py)."""

    event: dict | None = None

    def take(self) -> dict | None:
        event, self.event = self.event, None
        return event


@dataclass(frozen=True)
class Job:
    """One image's work as its task's row records it (image_run.py reads it), never as a message says."""

    task_id: str
    input_key: str
    options: dict[str, Any]
    output_path: str
    batch_id: str | None = None
    owner: int | None = None

    @classmethod
    def of(cls, row: TaskRow) -> Job:
        batch_id = str(row["batch_id"]) if row["batch_id"] else None
        return cls(str(row["id"]), row["input_key"], row["options"], row["output_path"], batch_id, row["owner_id"])


def lookup_result(key: str, start: dict | None = None) -> ResultRow | None:
    """An earlier identical result, or None (also when Postgres is down: then the model runs).

    `start`, the run's start event (image_run.py), is written in the same round trip, before the
    lookup: the two were a round trip and a transaction each, on every image's path."""
    try:
        if start is not None:
            return cast("ResultRow | None", get_mirror().record_then_read(start, reads.result_query(key)))
        with db.autocommit() as cur:  # one round trip: the lookup is on every task's path
            return reads.find_result(cur, key)
    except (psycopg2.Error, OSError) as exc:
        log.warning("result lookup skipped, postgres unavailable: %s", exc)
        return None


def reuse(existing: ResultRow, target: Path, storage: Storage) -> bool:
    """Copy an identical earlier result to `target`, its raw matte first where it has one (a result
    made before mattes were kept has none: its copy cannot be re-rendered either): False when the
    result is gone (then the model runs). Raises TransientError when storage cannot be written: a
    hiccup to wait out, like any other write."""
    source = storage.root / existing["output_path"]
    try:
        if not source.exists():
            return False
        if source.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_raw_matte(source, target)
            shutil.copyfile(source, target)
    except FileNotFoundError:  # its owner deleted it (or retention took it) since the lookup: run
        return False
    except OSError as exc:
        raise TransientError(f"cannot copy an earlier identical result: {exc.strerror or exc}") from exc
    return True


def copy_raw_matte(source: Path, target: Path) -> None:
    """The raw matte of the result at `source` beside `target`, written whole (atomically) or not at all."""
    try:
        matte = raw_matte_path(source).read_bytes()
    except FileNotFoundError:
        return
    write_atomic(raw_matte_path(target), matte, temp_prefix=RAW_TEMP_PREFIX)


# The longest output name the worker writes: 255 bytes less storage.write_atomic's `.NAME.XXXXXXXX.part`.
MAX_OUTPUT_NAME_BYTES = 255 - len("..XXXXXXXX.part")


def output_target(storage: Storage, output_path: str) -> Path:
    """Where the result goes: only ever under the data root, whatever the message said.

    The message comes from the broker (and Flower can send one): an absolute or climbing path is
    refused for good (InputError), and so is a name too long to write, before the model runs."""
    root = storage.root.resolve()
    relative = Path(output_path)
    if relative.is_absolute() or ".." in relative.parts or not output_path.strip():
        raise InputError("the output path lies outside the data root", code=ErrorCode.BAD_OUTPUT_PATH)
    target = root / relative
    if not target.resolve().is_relative_to(root):  # a link on the way out of the root
        raise InputError("the output path lies outside the data root", code=ErrorCode.BAD_OUTPUT_PATH)
    if len(target.name.encode()) > MAX_OUTPUT_NAME_BYTES:
        raise InputError("the output file name is too long", code=ErrorCode.BAD_OUTPUT_PATH)
    return target


def process(job: Job, *, session: Session, storage: Storage, settings: Settings, start: RunStart | None = None) -> dict:
    """Run one image; returns the fields to mirror. Raises InputError or TransientError.

    `start`: the run's start event, written with the result lookup (one round trip for both). Whether
    the task still wants the file written is for the caller to ask once it is written (`keep_only_if_wanted`,
    or with the run's end event, tasks.finish_run: one round trip for both)."""
    opts = OutputOptions.from_dict(job.options)
    key = idem_key(job.input_key, session.version, opts, job.owner)
    target = output_target(storage, job.output_path)
    # The model's version goes on the row: a re-render of this result registers under the same key.
    result = {"idem_key": key, "output_path": job.output_path, "model_version": session.version}
    existing = lookup_result(key, start.take() if start is not None else None)
    if existing and reuse(existing, target, storage):
        size = {"width": existing["width"], "height": existing["height"]}
        return {**result, "reused": True, **size, "confidence": existing.get("confidence")}
    clock = time.perf_counter()
    try:
        data = storage.read_input(job.input_key)
    except FileNotFoundError:
        raise InputError("the stored input is missing from the shared storage", code=ErrorCode.MISSING_INPUT) from None
    except OSError as exc:
        raise TransientError(f"cannot read input: {exc}") from exc
    background = read_background(storage, opts)
    read_s = time.perf_counter() - clock
    inject_faults(job.input_key)
    matted = matte_bytes(data, opts, session, settings, keep_raw=True, background=background)
    clock = time.perf_counter()
    try:
        # The matte first: a result on disk has its matte, for as long as both are kept.
        if matted.raw_matte is not None:
            write_atomic(raw_matte_path(target), matted.raw_matte, temp_prefix=RAW_TEMP_PREFIX)
        write_atomic(target, matted.data)
    except OSError as exc:
        raise TransientError(f"cannot write {job.output_path}: {exc.strerror or exc}") from exc
    # The shared storage's own stages, beside the model's: slow NFS shows up here, not as queue time.
    storage_timings = {"read": read_s, "write": time.perf_counter() - clock}
    timings = {k: round(v, 4) for k, v in (matted.timings | storage_timings).items()}
    size = {"width": matted.width, "height": matted.height}
    return {**result, "reused": False, **size, "timings": timings, "confidence": matted.confidence}


def read_background(storage: Storage, options: OutputOptions) -> bytes | None:
    """The background image the options name (stored as inputs are), or None when they name none."""
    if options.bg_image is None:
        return None
    try:
        return storage.read_input(options.bg_image)
    except FileNotFoundError:
        message = "the background image is missing from the shared storage"
        raise InputError(message, code=ErrorCode.MISSING_INPUT) from None
    except OSError as exc:
        raise TransientError(f"cannot read the background image: {exc}") from exc


def keep_only_if_wanted(job: Job, written: Path) -> None:
    """A result written for a task deleted (or expired) meanwhile is removed again, and the run dropped.

    Only a second run of the task can meet this (its first finished, then its owner deleted it: a
    delete waits for the task to finish). The deleter commits first and removes the files after, and
    this looks after writing: whichever comes second removes the file. A run that takes the task's
    finish claim asks with its end event instead (tasks.finish_run); this is for the runs that do not."""
    if still_wanted(job.task_id):
        return
    discard(written)
    raise NoLongerWanted(job.task_id)


def discard(written: Path) -> None:
    """A result and its raw matte, removed: its task no longer wants them."""
    written.unlink(missing_ok=True)
    raw_matte_path(written).unlink(missing_ok=True)


def still_wanted(task_id: str) -> bool:
    """Whether the task's row still wants a result. True when PostgreSQL cannot say: a delete that
    committed and removed its files in that very moment leaves this one behind, the one narrow window."""
    try:
        with db.autocommit() as cur:
            return bool(reads.task_wanted(cur, task_id))
    except psycopg2.Error as exc:
        log.warning("could not check that task %s is still wanted: %s", task_id, exc)
        return True
