"""A message runs its own task only, as its row says, and only while the task is still wanted:
neither a redelivered message of a deleted task nor one with forged arguments (Flower can send any)
writes anything the task's row does not ask for (issue 26, items 6 and 8)."""

from __future__ import annotations

import os
import uuid

import pytest

from cvunet_matting import db
from cvunet_matting.celery_app import app as celery_app
from cvunet_matting.config import get_settings
from cvunet_matting.db import writes
from cvunet_matting.pipeline import dispatch, finish
from cvunet_matting.storage.files import Storage
from tests import support
from tests.support import png_bytes

pytestmark = [pytest.mark.services, pytest.mark.stack]


def storage() -> Storage:
    return Storage(get_settings().data_dir)


def results_of(task_id: str) -> int:
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM results WHERE task_id = %s", (task_id,))
        return cur.fetchone()["n"]


def dropped(worker, task_id: str) -> bool:
    return f"task {task_id} dropped" in worker.log_path.read_text(errors="replace")


def new_task(owner_id: int | None, data: bytes, name: str) -> dict:
    """A recorded task (its message not sent): what submission records before it publishes."""
    row = {
        "id": uuid.uuid4(),
        "filename": name,
        "input_key": storage().put_input(data),
        "options": {},
        "output_path": f"outputs/images/{uuid.uuid4().hex}/{name}",
    }
    with db.transaction() as cur:
        writes.create_tasks(cur, [row])
        if owner_id is not None:
            writes.set_owner(cur, owner_id, task_ids=[row["id"]])
    return {**row, "owner_id": owner_id}


def test_a_deleted_tasks_message_delivered_again_writes_nothing(clean_state, alice, worker_factory):
    """A visibility-timeout redelivery of a finished, unacknowledged message (or Flower's resend),
    arriving after its owner deleted the task and after the result backend let its result go."""
    from cvunet_matting.cleanup.deleting import delete_task

    row = new_task(alice.id, png_bytes(420), "mine.png")
    new_task(alice.id, png_bytes(420), "again.png")  # kept: the input stays, and a stray run could read it
    task_id = str(row["id"])
    dispatch.publish_image(row)
    worker = worker_factory()
    done = support.wait_task(task_id, "success")
    delete_task(storage(), task_id)
    result = storage().root / row["output_path"]
    assert not result.exists()
    deleted = support.task_row(task_id)
    finish.forget(support.redis(), celery_app, [task_id])  # the backend's result expired (a week) or Redis lost it
    dispatch.publish_image(row)  # the very message again
    support.wait_until(
        lambda: dropped(worker, task_id) or result.exists() or support.task_row(task_id) != deleted,
        60,
        message="the message was neither run nor dropped",
    )
    assert not result.exists() and not result.parent.exists()
    assert support.task_row(task_id) == deleted  # the row stays deleted, untouched
    assert deleted["deleted_at"] is not None and deleted["state"] == done["state"] == "success"
    assert results_of(task_id) == 0


def test_a_forged_message_writes_only_its_own_tasks_path(clean_state, alice, worker_factory):
    """Alice's task, sent with Bob's result as its output path and Bob as its owner: it neither
    overwrites Bob's file nor copies Bob's result; it mattes Alice's input into Alice's path."""
    bob = support.make_user(prefix="bob")
    photo = png_bytes(421)
    bobs = new_task(bob.id, photo, "bobs.png")
    dispatch.publish_image(bobs)
    worker_factory()
    bobs_row = support.wait_task(str(bobs["id"]), "success")
    bobs_file = storage().root / bobs_row["output_path"]
    before = (bobs_file.read_bytes(), os.stat(bobs_file).st_mtime_ns)

    alices = new_task(alice.id, photo, "alices.png")  # the same bytes: Bob's result would be reused
    forged = {**alices, "output_path": bobs_row["output_path"], "owner_id": bob.id, "options": {"format": "webp"}}
    dispatch.publish_image(forged)
    row = support.wait_task(str(alices["id"]), "success")
    assert row["output_path"] == alices["output_path"] and not row["reused"]
    assert (storage().root / alices["output_path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # her options: PNG
    assert (bobs_file.read_bytes(), os.stat(bobs_file).st_mtime_ns) == before
    assert sorted(p.name for p in bobs_file.parent.iterdir()) == [".bobs.png.raw.png", "bobs.png"]


def test_a_message_for_no_task_runs_nothing(clean_state, worker_factory):
    row = {"id": uuid.uuid4(), "input_key": storage().put_input(png_bytes(422)), "options": {}}
    row["output_path"] = f"outputs/images/{uuid.uuid4().hex}/ghost.png"
    worker = worker_factory()
    dispatch.publish_image(row)  # no row was recorded for it
    support.wait_until(lambda: dropped(worker, str(row["id"])), 60, message="the message was not dropped")
    assert not (storage().root / row["output_path"]).exists()


def test_a_task_deleted_while_its_run_works_keeps_no_file_and_no_end(clean_state, alice, worker_factory):
    """Its first run finished and its owner deleted it while a second run still worked on it (here: the
    row deleted under a held run). The second run asks with its end event whether the row still wants
    its file (one round trip): the file goes again, the end lands nowhere, no result is stored."""
    row = new_task(alice.id, png_bytes(423), "late.png")
    task_id = str(row["id"])
    worker = worker_factory(CVUNET_TEST_DELAY_S="3")  # each image holds its worker 3 s
    dispatch.publish_image(row)
    support.wait_until(lambda: support.task_row(task_id)["state"] == "started", 60, message="the run did not start")
    with db.transaction() as cur:
        writes.delete_tasks(cur, [row["id"]])
    deleted = support.task_row(task_id)
    support.wait_until(
        lambda: "deleted or expired while it ran" in worker.log_path.read_text(errors="replace"),
        60,
        message="the run did not see its row go",
    )
    result = storage().root / row["output_path"]
    assert not result.exists() and sorted(result.parent.iterdir()) == []
    assert support.task_row(task_id) == deleted and deleted["state"] == "started"
    assert results_of(task_id) == 0
    assert celery_app.backend.get_state(task_id) == "PENDING"  # dropped: no result stored
