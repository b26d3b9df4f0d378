"""One run of matte_image: whether it goes ahead at all, its number among the task's starts, whether
it was cancelled, and the count of its end: decided once, when the run begins, and handed to the
task's body as an `ImageRun` (tasks.py).

A message can run more than once (its worker was declared dead, then finished after all). A run of a
task that is finished already is dropped before anything else: no STARTED in the result backend (it
would overwrite a lone image's FAILURE, and make the task look unfinished to a later run), no start
counted, no "started" event, which would be newer than the row's final one. A cancelled run is
numbered but shows no start: it ends at once, as its row already says (pipeline/cancelling.py). Any
other run records its start in the background (the image's work need not wait for a state shown for
information), and its end when it is over, however it ends: a start with no end is a process that
died, which is what the poison-input cap counts (storage/redis_client.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery import Task, states
from celery.exceptions import Ignore

from cvunet_matting.pipeline import cancelling, finish
from cvunet_matting.storage.redis_client import count_attempt, count_end, get_redis

from .signals import mirror_start

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRun:
    task_id: str
    attempts: int  # this run's number among the task's starts, this one included
    cancelled: bool | None  # None: Redis could not tell when the run began; the body asks again


class ImageTask(Task):
    """matte_image's base: its runs begin with `begin_run`, which stores STARTED itself, after it has
    made sure the task is not finished already (Celery's own track_started stores it before any code
    of the task runs)."""

    track_started = False

    @contextmanager
    def begin_run(self) -> Iterator[ImageRun]:
        """The run in hand, for the task's body; raises Ignore when another run finished the task."""
        request = self.request
        task_id = str(request.id)
        if finished_already(self.app, task_id):
            raise Ignore()
        if self.app.conf.task_track_started and not request.is_eager:
            started = {"pid": os.getpid(), "hostname": request.hostname}
            self.backend.store_result(task_id, started, states.STARTED, request=request)
        cancelled = cancelled_or_unknown(task_id)  # read once: the body is handed it
        attempts = count_attempt(task_id)
        if cancelled:
            yield ImageRun(task_id, attempts, cancelled)
            return
        mirror_start(task_id, attempts, request.hostname)
        try:
            yield ImageRun(task_id, attempts, cancelled)
        finally:
            count_end_quietly(task_id)


def finished_already(app, task_id: str) -> bool:
    try:
        return finish.is_finished(app, task_id)
    except Exception as exc:  # Redis away: run it; the finish claim still keeps one result
        log.warning("could not read the state of %s: %s", task_id, exc)
        return False


def cancelled_or_unknown(task_id: str) -> bool | None:
    """Whether the task was cancelled; None when Redis cannot tell (the start is recorded, and the
    task itself looks again)."""
    try:
        return cancelling.is_cancelled(get_redis(), task_id)
    except Exception as exc:
        log.warning("could not read whether %s was cancelled: %s", task_id, exc)
        return None


def count_end_quietly(task_id: str) -> None:
    try:
        count_end(task_id)
    except Exception as exc:  # Redis away: at worst a later run counts this one as a crash
        log.warning("could not count the end of %s: %s", task_id, exc)
