"""One run of matte_image (worker/image_run.py): a run of a task that is finished already is dropped
before it touches anything, in a real worker."""

from __future__ import annotations

import uuid

import pytest
from celery import states

from cvunet_matting import db
from cvunet_matting.celery_app import app
from cvunet_matting.config import get_settings
from cvunet_matting.db import writes
from cvunet_matting.pipeline import dispatch
from cvunet_matting.storage.files import Storage
from cvunet_matting.storage.redis_client import attempts_key
from tests import support
from tests.support import png_bytes

pytestmark = [pytest.mark.services, pytest.mark.stack]


def test_a_second_copy_of_a_failed_images_message_leaves_its_failure_as_it_was(clean_state, worker_factory):
    """A lone image's failure is FAILURE in the result backend, which Celery's own STARTED would
    overwrite (it guards only SUCCESS): the copy is dropped before STARTED, a start or a count."""
    row = {
        "id": uuid.uuid4(),
        "filename": "x.png",
        "input_key": Storage(get_settings().data_dir).put_input(png_bytes(24)),
        "options": {},
        "output_path": "/outside/the/data/root.png",  # refused at once: the image fails for good
    }
    task_id = str(row["id"])
    with db.transaction() as cur:
        writes.create_tasks(cur, [row])
    dispatch.publish_image(row)
    worker = worker_factory()
    failed = support.wait_task(task_id, "failure")
    assert app.backend.get_state(task_id) == states.FAILURE
    dispatch.publish_image(row)  # a second copy, as a watchdog's republish in error would send
    support.wait_until(
        lambda: f"[{task_id}] ignored" in worker.log_path.read_text(errors="replace"),
        60,
        message="the second copy ran",
    )
    assert app.backend.get_state(task_id) == states.FAILURE
    assert int(support.redis().get(attempts_key(task_id))) == 1  # the copy counted no start
    assert support.task_row(task_id) == failed  # no "started" event either
