"""Cancelling work not yet started: a batch's waiting images, or one task; what runs finishes."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from cvunet_matting import db
from cvunet_matting.config import get_settings
from cvunet_matting.db import reads
from cvunet_matting.pipeline import cancelling
from cvunet_matting.storage.files import Storage
from cvunet_matting.storage.redis_client import get_redis
from cvunet_matting.web import create_app
from tests import support
from tests.support import png_bytes

pytestmark = pytest.mark.services
SLOW_MS = 3000  # long enough that the batch's later images are still waiting when it is cancelled


def submit_batch(client, count: int, seed: int) -> str:
    files = [(io.BytesIO(png_bytes(seed + n)), f"img{n}.png") for n in range(count)]
    response = client.post("/api/v1/batches", data={"files": files}, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    return response.get_json()["batch_id"]


def started(batch_id: str) -> bool:
    return any(row["state"] == "started" for row in support.rows_of(batch_id))


@pytest.mark.stack
def test_a_cancelled_batch_ends_with_what_ran_and_its_waiting_images_never_run(app, alice, worker_factory, tmp_root):
    model = support.build_isnet_shaped_model(tmp_root / "models" / "sim-isnet-64.onnx", size=64)
    worker_factory("slow@%h", CVUNET_MODEL=str(model), **support.simulated_device_env(tmp_root / "sim", SLOW_MS))
    client = support.user_client(app, alice)
    batch_id = submit_batch(client, 4, seed=300)
    support.wait_for(lambda: started(batch_id), 60, "the first image running")

    other = support.user_client(app, support.make_user(prefix="mallory"))
    assert other.post(f"/api/v1/batches/{batch_id}/cancel").status_code == 404  # not theirs
    answer = client.post(f"/api/v1/batches/{batch_id}/cancel")
    assert answer.status_code == 200
    cancelled = answer.get_json()["cancelled"]
    assert answer.get_json()["batch_id"] == batch_id and 1 <= cancelled <= 3

    batch = support.wait_batch(batch_id, timeout=120)
    rows = support.rows_of(batch_id)
    done = [r for r in rows if r["state"] == "success"]
    dropped = [r for r in rows if r["error_code"] == "cancelled"]
    assert len(done) + len(dropped) == 4 and len(dropped) == cancelled and done
    assert all(r["state"] == "failure" and r["error"] == cancelling.REASON for r in dropped)
    assert all(r["width"] is None and r["started_at"] is None for r in dropped)  # never decoded, never "started"
    with zipfile.ZipFile(Storage(get_settings().data_dir).resolve(batch["zip_path"])) as z:
        names = set(z.namelist())
    assert {f"img{r['position']}.png" for r in done} <= names
    assert not {f"img{r['position']}.png" for r in dropped} & names

    # Asked to run after all, a cancelled image runs.
    again = client.post(f"/api/v1/tasks/{dropped[0]['id']}/retry")
    assert again.status_code == 202
    assert support.wait_task(str(dropped[0]["id"]), "success", timeout=60)["error_code"] is None


@pytest.mark.stack
def test_one_waiting_task_is_cancelled_and_a_finished_one_is_not(app, alice, worker_factory):
    client = support.user_client(app, alice)
    body = {"file": (io.BytesIO(png_bytes(310)), "one.png")}
    task_id = client.post("/api/v1/images", data=body, content_type="multipart/form-data").get_json()["task_id"]
    other = support.user_client(app, support.make_user(prefix="eve"))
    assert other.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 404
    answer = client.post(f"/api/v1/tasks/{task_id}/cancel")  # no worker yet: it waits in the queue
    assert answer.status_code == 200 and answer.get_json() == {"task_id": task_id, "cancelled": 1}
    worker_factory()
    row = support.wait_task(task_id, "failure", timeout=60)
    assert row["error_code"] == "cancelled" and row["error"] == cancelling.REASON
    late = client.post(f"/api/v1/tasks/{task_id}/cancel")
    assert late.status_code == 409 and late.get_json()["error"]["code"] == "not_pending"
    status = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert status["state"] == "failure" and status["error_code"] == "cancelled"


@pytest.mark.stack
def test_a_cancelled_image_ends_at_once_and_a_retry_runs_it_once(app, alice, worker_factory):
    """No worker yet: the cancel ends the row in the request (its owner sees it, and may retry it at
    once); the retry takes the original message off the queue, so the image runs once, not twice."""
    client = support.user_client(app, alice)
    body = {"file": (io.BytesIO(png_bytes(315)), "changed-my-mind.png")}
    task_id = client.post("/api/v1/images", data=body, content_type="multipart/form-data").get_json()["task_id"]
    assert client.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 200
    status = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert status["state"] == "failure" and status["error_code"] == "cancelled"
    assert client.post(f"/api/v1/tasks/{task_id}/retry").status_code == 202
    queue = get_settings().queue
    messages = [json.loads(raw)["headers"]["id"] for raw in get_redis().lrange(queue, 0, -1)]
    assert messages == [task_id]  # the original went: one message, not two
    worker_factory()
    assert support.wait_task(task_id, "success", timeout=60)["attempts"] == 1


def test_the_pages_offer_cancel_while_work_waits(app, alice):
    pages = support.user_client(app, alice)
    api = support.user_client(app, alice)
    body = {"file": (io.BytesIO(png_bytes(320)), "wait.png")}
    task_id = api.post("/api/v1/images", data=body, content_type="multipart/form-data").get_json()["task_id"]
    page = pages.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert f"/tasks/{task_id}/cancel" in page
    token = support.page_csrf(pages, f"/tasks/{task_id}")
    assert pages.post(f"/tasks/{task_id}/cancel").status_code == 403  # the form's token is required
    sent = pages.post(f"/tasks/{task_id}/cancel", data={"csrf_token": token})
    assert sent.status_code == 302 and "Cancelled: it will not run." in pages.get(sent.headers["Location"]).get_data(
        as_text=True
    )
    assert cancelling.is_cancelled(get_redis(), task_id)

    batch_id = submit_batch(api, 2, seed=321)
    assert f"/batches/{batch_id}/cancel" in pages.get(f"/batches/{batch_id}").get_data(as_text=True)
    sent = pages.post(f"/batches/{batch_id}/cancel", data={"csrf_token": token})
    assert "2 waiting images cancelled" in pages.get(sent.headers["Location"]).get_data(as_text=True)


def test_an_operators_requeue_of_failures_leaves_cancelled_and_unstored_tasks_alone(app, alice):
    api = support.user_client(app, alice)
    body = {"file": (io.BytesIO(png_bytes(330)), "x.png")}
    task_id = api.post("/api/v1/images", data=body, content_type="multipart/form-data").get_json()["task_id"]
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET state = 'failure', error_code = 'cancelled' WHERE id = %s", (task_id,))
        assert reads.requeue_candidates(cur, failed=True, stuck_seconds=None) == []
        cur.execute("UPDATE tasks SET error_code = 'internal' WHERE id = %s", (task_id,))
        assert [str(r["id"]) for r in reads.requeue_candidates(cur, failed=True, stuck_seconds=None)] == [task_id]
        # A file refused on arrival has nothing stored to run, even with --include-refused.
        cur.execute("UPDATE tasks SET error_code = 'refused', input_key = '' WHERE id = %s", (task_id,))
        assert reads.requeue_candidates(cur, failed=True, stuck_seconds=None, include_refused=True) == []


def listed_folder(count: int):
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.pipeline.submission import submit_folder

    folder = get_settings().allowed_roots[0] / f"cancel-{count}-{support.free_port()}"
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"img{i:02d}.png").write_bytes(png_bytes(340 + i, (40, 30)))
    return submit_folder(str(folder), OutputOptions())


def test_a_folder_batch_cancelled_while_it_is_listed_records_no_more_pages(clean_state, monkeypatch):
    """Cancelled between two pages of its listing, as its owner would: the page recorded after the
    cancel read the rows is cancelled by the listing itself, and no page follows."""
    from cvunet_matting.pipeline import folder_listing

    settings = support.settings(CVUNET_BATCH_CHUNK=2)
    batch_id = listed_folder(6)
    real = folder_listing.record_page

    def record_then_cancel(*args, **kwargs):
        recorded = real(*args, **kwargs)
        get_redis().set(cancelling.CANCELLED + f"batch:{batch_id}", 1)  # the cancel's mark, its read just before
        return recorded

    monkeypatch.setattr(folder_listing, "record_page", record_then_cancel)
    result = folder_listing.list_folder(batch_id, settings)
    rows = support.rows_of(batch_id)
    assert result["listed"] == 2 and result["error"] == folder_listing.LISTING_CANCELLED and len(rows) == 2
    assert all(cancelling.is_cancelled(get_redis(), str(r["id"])) for r in rows)
    assert folder_listing.LISTING_CANCELLED in support.batch_row(batch_id)["error"]

    before = listed_folder(3)  # cancelled before its listing began: nothing is recorded
    assert cancelling.cancel(get_redis(), batch_id=before) == 0
    assert folder_listing.list_folder(before, settings)["listed"] == 0 and support.rows_of(before) == []


def test_an_operator_cancels_from_the_command_line(app, alice):
    """`cvunet-matting cancel` (also `celery -A cvunet_matting cancel`): a batch's waiting images, one
    task; a wrong or unknown id is a one-line error, not a traceback."""
    api = support.user_client(app, alice)
    batch_id = submit_batch(api, 2, seed=350)
    done = support.run_cli("cancel", "--batch", batch_id)
    assert done.returncode == 0 and done.stdout.strip() == "2 task(s) cancelled", done.stdout + done.stderr
    rows = support.rows_of(batch_id)
    assert all(cancelling.is_cancelled(get_redis(), str(r["id"])) for r in rows)
    assert all(r["state"] == "failure" and r["error_code"] == "cancelled" for r in rows)  # at once
    again = support.run_cli("cancel", "--task", str(rows[0]["id"]))
    assert again.returncode == 0 and "0 task(s) cancelled: none was waiting" in again.stdout  # ended already
    for argv, words in (
        ((), "say what to cancel"),
        (("--batch", "nope"), "'nope' is not a batch id"),
        (("--task", "00000000-0000-0000-0000-000000000000"), "no task 00000000-0000-0000-0000-000000000000"),
    ):
        refused = support.run_cli("cancel", *argv)
        assert refused.returncode != 0 and words in refused.stderr and "Traceback" not in refused.stderr, argv


@pytest.mark.stack
def test_a_cancelled_batchs_waiting_images_end_at_once_and_the_batch_soon_after(alice, worker_factory, tmp_root):
    """Chunks of 2, two in flight: of 10 images, 6 were never sent to the queue. Cancelled, all 9 waiting
    end in the request itself; the batch ends once the 3 messages on the queue are reached and dropped,
    not chunk after chunk, and no dropped one ever showed as started."""
    app = create_app({"TESTING": True, "CVUNET_BATCH_CHUNK": "2"})
    model = support.build_isnet_shaped_model(tmp_root / "models" / "sim-isnet-64.onnx", size=64)
    worker_factory("slow@%h", CVUNET_MODEL=str(model), **support.simulated_device_env(tmp_root / "sim", 5000))
    client = support.user_client(app, alice)
    batch_id = submit_batch(client, 10, seed=360)
    support.wait_for(lambda: started(batch_id), 60, "the first image running")
    assert client.post(f"/api/v1/batches/{batch_id}/cancel").get_json()["cancelled"] == 9
    at_once = [r for r in support.rows_of(batch_id) if r["error_code"] == "cancelled"]
    assert len(at_once) == 9 and {r["chunk"] for r in at_once} == {0, 1, 2, 3, 4}
    assert all(r["state"] == "failure" and r["error"] == cancelling.REASON for r in at_once)
    status = client.get(f"/api/v1/batches/{batch_id}").get_json()
    assert (status["failed"], status["pending"]) == (9, 1)  # the owner sees it now; the running one finishes

    batch = support.wait_batch(batch_id, timeout=120)
    rows = support.rows_of(batch_id)
    assert [r["state"] for r in rows].count("success") == 1 and batch["zip_path"]
    dropped = [r for r in rows if r["error_code"] == "cancelled"]
    assert len(dropped) == 9 and all(r["width"] is None and r["started_at"] is None for r in dropped)  # never "started"


def test_hundreds_of_empty_chunks_in_a_row_complete_without_recursion(clean_state):
    """A cancelled folder of 100,000 leaves 500 chunks with nothing to run: the chain walks them in a
    loop (it recursed twice a chunk, past Python's limit) and finalizes the batch."""
    import uuid

    from cvunet_matting.db import writes
    from cvunet_matting.pipeline import batch_lifecycle

    batch_id, chunks = uuid.uuid4(), 600
    rows = [
        {"id": uuid.uuid4(), "batch_id": batch_id, "chunk": n, "position": n, "filename": f"{n}.png",
         "input_key": "", "options": {}, "output_path": f"outputs/many/{n}.png"}
        for n in range(chunks)
    ]  # fmt: skip
    with db.transaction() as cur:
        writes.create_batch(cur, batch_id, "upload", chunks, {}, "outputs/many", chunks=chunks)
        writes.create_tasks(cur, rows)
        writes.end_cancelled(cur, [r["id"] for r in rows], cancelling.REASON)
    batch_lifecycle.start(str(batch_id))
    with db.transaction() as cur:
        cur.execute("SELECT state, count(*) AS n FROM chunks WHERE batch_id = %s GROUP BY state", (batch_id,))
        assert {row["state"]: row["n"] for row in cur.fetchall()} == {"done": chunks}
    assert support.redis().llen(get_settings().bookkeeping_queue) == 1  # the finalize, published once
