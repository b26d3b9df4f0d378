"""One run of matte_image: whether it goes ahead at all, its number among the task's starts, whether
it was cancelled, and the count of its end: decided once, when the run begins, and handed to the
task's body as an `ImageRun` (tasks.py).

A message can run more than once (its worker was declared dead, then finished after all). A run of a
task that is finished already is dropped before anything is counted or written: no start counted, no
"started" event, which would be newer than the row's final one (it is seen by the script that counts
the start, in the same round trip, after the task's row is read). No run stores STARTED in the result backend (Celery's
track_started would, before any code of the task ran, over a lone image's FAILURE): nothing reads it
there; Flower hears the worker's task-started event, the pages read the row. A cancelled run is
numbered but shows no start: it ends at once, as its row already says (pipeline/cancelling.py). Any
other run records its start with its first query to PostgreSQL (the result lookup: one round trip
for both, image_job.py; before its end, for a run that ends before it looks), and its end when it is
over, however it ends: a start with no end is a process that
died, which is what the poison-input cap counts (storage/redis_client.py).

What a run works on comes from its task's row, read by the message's id, never from the message's
own copies: a message (redelivered, republished by hand, sent from Flower, forged) can only ever run
its own task, into its own path, for its own owner. A row that is final (a redelivery of a finished
but unacknowledged message), deleted or expired drops the run like a finished one: such a task never
writes a result again. No row: no task, nothing to run. While PostgreSQL cannot be asked, the run
waits (a retry): without the row it cannot know whether the task is still wanted.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg2
from celery import Task, states
from celery.backends.redis import RedisBackend
from celery.exceptions import Ignore
from kombu.utils.encoding import bytes_to_str

from cvunet_matting import db
from cvunet_matting.db import reads
from cvunet_matting.db.rows import TaskRow
from cvunet_matting.pipeline import cancelling, finish
from cvunet_matting.states import FINAL_TASK_STATES, FailureCode, TaskState
from cvunet_matting.storage.redis_client import begin_run as begin_counts
from cvunet_matting.storage.redis_client import count_end

from .image_job import Job, RunStart
from .signals import mirror_start, start_event

log = logging.getLogger(__name__)


@dataclass
class RunEnd:
    counted: bool = False  # the run's end was counted with its finish claim (tasks.finish_run)


@dataclass(frozen=True)
class ImageRun:
    task_id: str
    attempts: int  # this run's number among the task's starts, this one included
    cancelled: bool
    job: Job  # what to do, from the task's row
    crashes: int = 0  # worker processes that died on this input (its task's and others'); 0 when cancelled
    end: RunEnd = field(default_factory=RunEnd)
    start: RunStart = field(default_factory=RunStart)  # none for a cancelled run


class DatabaseAway(Exception):
    """The task's row cannot be read now: the run waits for PostgreSQL (tasks.py retries it)."""


class ImageTask(Task):
    """matte_image's base: its runs begin with `begin_run`, which makes sure the task is not finished
    already. No STARTED in the result backend (see the module): it cost a round trip and the
    request's JSON per image, for no reader."""

    track_started = False

    @contextmanager
    def begin_run(self) -> Iterator[ImageRun]:
        """The run in hand, for the task's body; raises Ignore when another run finished the task."""
        request = self.request
        task_id = str(request.id)
        result_key = json_result_key(self.app, task_id)
        if result_key is None and finished_already(self.app, task_id):
            raise Ignore()
        try:
            row = task_row(task_id)
        except DatabaseAway:  # the caller retries, unless the task finished already
            if result_key is not None and finished_already(self.app, task_id):
                raise Ignore() from None
            raise
        if row is None or not still_to_run(row):
            log.warning("task %s dropped: its row is %s", task_id, describe(row))
            raise Ignore()
        job = Job.of(row)
        # Read once, the body is handed it: finished already (nothing counted then), cancelled or not,
        # the start counted, the input's crashes; one round trip (Redis away: the run cannot be
        # counted, and fails as unfinished, see signals).
        cancelled_key = cancelling.CANCELLED + task_id
        begun = begin_counts(task_id, job.input_key, cancelled_key, was_cancelled(row), result_key, states.READY_STATES)
        if begun is None:  # another run finished the task
            raise Ignore()
        attempts, cancelled, crashes = begun
        if cancelled:
            yield ImageRun(task_id, attempts, cancelled, job, crashes)
            return
        start = RunStart(start_event(task_id, attempts, request.hostname))
        run = ImageRun(task_id, attempts, cancelled, job, crashes, start=start)
        try:
            yield run
        finally:
            write_start(run)  # a run that escaped before its lookup (its end was written already, if any)
            if not run.end.counted:
                count_end_quietly(task_id)


def write_start(run: ImageRun) -> None:
    """The run's start, if its result lookup did not write it: before anything else the run records."""
    event = run.start.take()
    if event is not None:
        mirror_start(event)


def task_row(task_id: str) -> TaskRow | None:
    """The task's row; None when there is none (or the id is no task id at all). Raises DatabaseAway."""
    try:
        uuid.UUID(task_id)
    except ValueError:
        return None
    try:
        with db.autocommit() as cur:
            return reads.get_task(cur, task_id)
    except psycopg2.Error as exc:
        raise DatabaseAway(f"cannot read the row of task {task_id}: {exc}") from exc


def was_cancelled(row: TaskRow) -> bool:
    return row["state"] == TaskState.FAILURE and row["error_code"] == FailureCode.CANCELLED


def still_to_run(row: TaskRow) -> bool:
    """Whether a message for this row may run: not once it was deleted or expired (its files are
    gone and must stay gone), nor once it finished, except a cancelled image whose message still
    ends it (its batch's chord counts it, see pipeline/cancelling.py)."""
    if row["deleted_at"] or row["expired_at"]:
        return False
    return row["state"] not in FINAL_TASK_STATES or was_cancelled(row)


def describe(row: TaskRow | None) -> str:
    if row is None:
        return "missing"
    if row["deleted_at"]:
        return "deleted"
    return "expired" if row["expired_at"] else str(row["state"])


def json_result_key(app, task_id: str) -> str | None:
    """The task's result key in Celery's Redis backend, where a script can read its status (JSON);
    None with another backend or serializer (then `finished_already` asks the backend itself)."""
    backend = app.backend
    if not isinstance(backend, RedisBackend) or backend.serializer != "json":
        return None
    return bytes_to_str(backend.get_key_for_task(task_id))


def finished_already(app, task_id: str) -> bool:
    try:
        return finish.is_finished(app, task_id)
    except Exception as exc:  # Redis away: run it; the finish claim still keeps one result
        log.warning("could not read the state of %s: %s", task_id, exc)
        return False


def count_end_quietly(task_id: str) -> None:
    try:
        count_end(task_id)
    except Exception as exc:  # Redis away: at worst a later run counts this one as a crash
        log.warning("could not count the end of %s: %s", task_id, exc)
