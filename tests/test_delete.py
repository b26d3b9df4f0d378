"""Deleting finished work: its files go at once, it leaves its owner's history and answers 404; an
input another kept task shares stays; unfinished work and a batch's single image are refused (409)."""

from __future__ import annotations

import io
import uuid

import cv2
import numpy as np
import pytest

from cvunet_matting import db
from cvunet_matting.config import get_settings
from cvunet_matting.recovery.requeue import retry_task
from cvunet_matting.storage.files import Storage, alpha_path, raw_matte_path
from tests import support
from tests.support import png_bytes

pytestmark = pytest.mark.services


def storage() -> Storage:
    return Storage(get_settings().data_dir)


def submit_image(client, seed: int, name: str = "one.png") -> str:
    body = {"file": (io.BytesIO(png_bytes(seed)), name)}
    response = client.post("/api/v1/images", data=body, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    return response.get_json()["task_id"]


def submit_batch(client, seeds: list[int]) -> str:
    files = [(io.BytesIO(png_bytes(seed)), f"img{n}.png") for n, seed in enumerate(seeds)]
    response = client.post("/api/v1/batches", data={"files": files}, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    return response.get_json()["batch_id"]


def error_code(response) -> str:
    return response.get_json()["error"]["code"]


def listed_task_ids(client) -> set[str]:
    return {t["task_id"] for t in client.get("/api/v1/tasks?limit=100").get_json()["tasks"]}


@pytest.mark.stack
def test_a_finished_image_is_deleted_with_its_files_and_only_by_its_owner(app, alice, worker_factory):
    client = support.user_client(app, alice)
    task_id = submit_image(client, 400)
    early = client.delete(f"/api/v1/tasks/{task_id}")  # no worker yet: it waits in the queue
    assert early.status_code == 409 and error_code(early) == "not_finished"
    worker_factory()
    row = support.wait_task(task_id, "success", timeout=60)
    assert client.get(f"/api/v1/tasks/{task_id}/alpha").status_code == 200  # derives the matte beside it
    result = storage().root / row["output_path"]
    files = (result, alpha_path(result), raw_matte_path(result), storage().input_path(row["input_key"]))
    assert all(f.exists() for f in files) and task_id in listed_task_ids(client)

    other = support.user_client(app, support.make_user(prefix="mallory"))
    assert other.delete(f"/api/v1/tasks/{task_id}").status_code == 404  # not theirs
    assert all(f.exists() for f in files)

    answer = client.delete(f"/api/v1/tasks/{task_id}")
    assert answer.status_code == 200
    assert answer.get_json() == {"task_id": task_id, "deleted": 1, "files_removed": 4}
    assert not any(f.exists() for f in files) and not result.parent.exists()
    for path in ("", "/result", "/input", "/alpha"):
        assert client.get(f"/api/v1/tasks/{task_id}{path}").status_code == 404
    assert task_id not in listed_task_ids(client)
    assert client.delete(f"/api/v1/tasks/{task_id}").status_code == 404  # once
    kept = support.task_row(task_id)  # the record stays, marked
    assert kept["deleted_at"] is not None and kept["expired_at"] is not None and kept["state"] == "success"
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM results WHERE task_id = %s", (task_id,))
        assert cur.fetchone()["n"] == 0  # no later task copies a result that is gone


@pytest.mark.stack
def test_a_finished_batch_is_deleted_whole_and_its_images_only_with_it(app, alice, worker_factory):
    client = support.user_client(app, alice)
    worker_factory()
    batch_id = submit_batch(client, [410, 411, 412])
    batch = support.wait_batch(batch_id, timeout=120)
    rows = support.rows_of(batch_id)
    one = client.delete(f"/api/v1/tasks/{rows[0]['id']}")
    assert one.status_code == 409 and error_code(one) == "in_batch"
    archive = storage().resolve(batch["zip_path"])
    folder = archive.parent
    assert archive.exists() and all((storage().root / r["output_path"]).exists() for r in rows)

    answer = client.delete(f"/api/v1/batches/{batch_id}")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["batch_id"] == batch_id and body["deleted"] == 3
    assert body["files_removed"] == 3 + 3 + 3 + 2  # results, their raw mattes, inputs, the ZIP and its manifest
    assert not folder.exists() and not any(storage().input_path(r["input_key"]).exists() for r in rows)
    assert client.get(f"/api/v1/batches/{batch_id}").status_code == 404
    assert client.get(f"/api/v1/batches/{batch_id}/zip").status_code == 404
    assert all(client.get(f"/api/v1/tasks/{r['id']}").status_code == 404 for r in rows)
    listed = client.get("/api/v1/batches").get_json()["batches"]
    assert batch_id not in {b["batch_id"] for b in listed}
    assert support.batch_row(batch_id)["deleted_at"] is not None

    # The same from the batch page's button, which lands on the Batches page.
    other = submit_batch(client, [413, 414])
    support.wait_batch(other, timeout=120)
    pages = support.user_client(app, alice)
    assert f"/batches/{other}/delete" in pages.get(f"/batches/{other}").get_data(as_text=True)
    sent = pages.post(f"/batches/{other}/delete", data={"csrf_token": support.page_csrf(pages, f"/batches/{other}")})
    assert sent.status_code == 302 and sent.headers["Location"].endswith("/batches")
    listing = pages.get("/batches").get_data(as_text=True)
    assert "Batch deleted: 2 images" in listing and other not in listing and "No batches yet" in listing


def test_an_unfinished_batch_is_not_deleted(app, alice):
    client = support.user_client(app, alice)
    batch_id = submit_batch(client, [420, 421])  # no worker: both wait
    refused = client.delete(f"/api/v1/batches/{batch_id}")
    assert refused.status_code == 409 and error_code(refused) == "not_finished"
    assert "cancel it" in refused.get_json()["error"]["message"]
    assert all(storage().input_path(r["input_key"]).exists() for r in support.rows_of(batch_id))
    assert client.delete(f"/api/v1/batches/{uuid.uuid4()}").status_code == 404
    assert client.delete("/api/v1/batches/not-an-id").status_code == 400


def finish(task_id: str, state: str = "success") -> dict:
    """Mark a task finished as a worker would, its result written."""
    row = support.task_row(task_id)
    result = storage().root / row["output_path"]
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_bytes(cv2.imencode(".png", np.zeros((48, 64, 4), np.uint8))[1].tobytes())  # a page shows it
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET state = %s, finished_at = now() WHERE id = %s", (state, task_id))
    return row


def test_an_input_another_kept_task_shares_stays(app, alice):
    client = support.user_client(app, alice)
    first, second = submit_image(client, 430, "a.png"), submit_image(client, 430, "b.png")  # the same bytes
    row = finish(first)
    finish(second)
    assert client.delete(f"/api/v1/tasks/{first}").get_json()["files_removed"] == 1  # its result only
    assert storage().input_path(row["input_key"]).exists()
    assert client.get(f"/api/v1/tasks/{second}/input").status_code == 200
    assert client.delete(f"/api/v1/tasks/{second}").get_json()["files_removed"] == 2  # now the input too
    assert not storage().input_path(row["input_key"]).exists()


def test_a_deleted_failure_cannot_be_retried_by_anyone(app, alice):
    client = support.user_client(app, alice)
    task_id = submit_image(client, 440)
    finish(task_id, "failure")
    assert client.delete(f"/api/v1/tasks/{task_id}").status_code == 200
    assert client.post(f"/api/v1/tasks/{task_id}/retry").status_code == 404
    # A retry that looked before the delete and locks the row after it finds it gone.
    assert retry_task(task_id) == "expired"
    assert support.task_row(task_id)["state"] == "failure"


def test_the_pages_offer_delete_for_finished_work_only(app, alice):
    pages = support.user_client(app, alice)
    api = support.user_client(app, alice)
    waiting = submit_image(api, 450, "waiting.png")
    assert f"/tasks/{waiting}/delete" not in pages.get(f"/tasks/{waiting}").get_data(as_text=True)
    done = submit_image(api, 451, "done.png")
    finish(done)
    page = pages.get(f"/tasks/{done}").get_data(as_text=True)
    assert f"/tasks/{done}/delete" in page and "data-confirm=" in page
    token = support.page_csrf(pages, f"/tasks/{done}")
    assert pages.post(f"/tasks/{done}/delete").status_code == 403  # the form's token is required
    sent = pages.post(f"/tasks/{done}/delete", data={"csrf_token": token})
    assert sent.status_code == 302 and sent.headers["Location"].endswith("/history")
    history = pages.get(sent.headers["Location"]).get_data(as_text=True)
    assert "Deleted: its original and its cut-out are gone." in history and "done.png" not in history
    assert "waiting.png" in history
    assert pages.get(f"/tasks/{done}").status_code == 404
    late = pages.post(f"/tasks/{waiting}/delete", data={"csrf_token": token})
    assert "cancel it" in pages.get(late.headers["Location"]).get_data(as_text=True)

    batch_id = submit_batch(api, [452, 453])
    assert f"/batches/{batch_id}/delete" not in pages.get(f"/batches/{batch_id}").get_data(as_text=True)


def test_a_result_deleted_between_its_lookup_and_its_copy_is_made_again(tmp_path, monkeypatch):
    """The worker looked the result up, then its owner deleted it: the copy finds nothing, so the image
    runs (reuse says no) instead of failing the task."""
    import shutil

    from cvunet_matting.worker import image_job

    store = Storage(tmp_path)
    (tmp_path / "outputs/images/a").mkdir(parents=True)
    (tmp_path / "outputs/images/a/x.png").write_bytes(b"result")

    def vanished(source, target):
        raise FileNotFoundError(source)

    monkeypatch.setattr(shutil, "copyfile", vanished)
    assert (
        image_job.reuse({"output_path": "outputs/images/a/x.png"}, tmp_path / "outputs/images/b/x.png", store) is False
    )


def test_files_a_killed_web_process_left_are_purged_by_the_sweep(app, alice):
    """The rows said deleted, then the process died before removing the files (or before saying so):
    the watchdog's hourly sweep removes them once the deletion is older than SETTLE_S."""
    from cvunet_matting.cleanup.deleting import SETTLE_S, purge_leftovers
    from cvunet_matting.db import writes
    from cvunet_matting.worker.watchdog import Watchdog

    client = support.user_client(app, alice)
    old, recent = submit_image(client, 460, "old.png"), submit_image(client, 461, "recent.png")
    rows = {task_id: finish(task_id) for task_id in (old, recent)}
    with db.transaction() as cur:
        writes.delete_tasks(cur, [uuid.UUID(old), uuid.UUID(recent)])  # as delete_task does, then no removal: the crash
        cur.execute(
            "UPDATE tasks SET deleted_at = now() - make_interval(secs => %s) WHERE id = %s", (SETTLE_S + 1, old)
        )
    files = {t: (storage().root / r["output_path"], storage().input_path(r["input_key"])) for t, r in rows.items()}
    assert all(f.exists() for pair in files.values() for f in pair)

    assert purge_leftovers(storage()) == {"tasks": 1, "batches": 0, "files": 2}
    assert not any(f.exists() for f in files[old]) and support.task_row(old)["purged_at"] is not None
    assert all(f.exists() for f in files[recent])  # its web process may still be at it
    assert purge_leftovers(storage()) == {"tasks": 0, "batches": 0, "files": 0}
    with db.transaction() as cur:
        cur.execute(
            "UPDATE tasks SET deleted_at = now() - make_interval(secs => %s) WHERE id = %s", (SETTLE_S + 1, recent)
        )
    Watchdog(None, "test", get_settings())._expire()  # the hourly round, as the elected worker runs it
    assert not any(f.exists() for f in files[recent]) and support.task_row(recent)["purged_at"] is not None


@pytest.mark.stack
def test_a_deleted_batchs_files_are_purged_after_a_crash(app, alice, worker_factory):
    from cvunet_matting.cleanup.deleting import purge_leftovers
    from cvunet_matting.db import writes

    client = support.user_client(app, alice)
    worker_factory()
    batch_id = submit_batch(client, [470, 471])
    batch = support.wait_batch(batch_id, timeout=120)
    rows = support.rows_of(batch_id)
    with db.transaction() as cur:
        writes.delete_tasks(cur, [r["id"] for r in rows])
        writes.delete_batch(cur, batch_id)
    assert client.get(f"/api/v1/batches/{batch_id}").status_code == 404  # gone for its owner at once
    done = purge_leftovers(storage(), settle_s=0)
    assert done == {"tasks": 2, "batches": 1, "files": 2 + 2 + 2 + 2}  # results, raw mattes, inputs, ZIP + manifest
    assert not storage().resolve(batch["zip_path"]).parent.exists()
    assert support.batch_row(batch_id)["purged_at"] is not None


def test_an_operator_purges_a_users_finished_work_and_is_told_what_remains(app, alice):
    from click.testing import CliRunner

    from cvunet_matting.commands.users import user
    from cvunet_matting.db import writes

    client, bob = support.user_client(app, alice), support.make_user(prefix="bob")
    done, waiting = submit_image(client, 480, "done.png"), submit_image(client, 481, "waiting.png")
    batch_id = submit_batch(client, [482, 483])
    for task_id in (done, *(str(r["id"]) for r in support.rows_of(batch_id))):
        finish(task_id)
    with db.transaction() as cur:
        writes.finish_batch(cur, batch_id, None, None)
    theirs = submit_image(support.user_client(app, bob), 484, "bobs.png")
    finish(theirs)
    runner = CliRunner()

    asked = runner.invoke(user, ["purge", alice.name], input="n\n")
    assert asked.exit_code == 1 and "for good?" in asked.output and support.task_row(done)["deleted_at"] is None
    purged = runner.invoke(user, ["purge", alice.name, "--yes"])
    assert f"deleted 1 batch(es) and 3 image(s) of {alice.name!r}; removed 6 file(s)" in purged.output
    assert purged.exit_code == 1 and "1 image(s) not finished were left" in purged.output  # the waiting one
    assert support.task_row(done)["deleted_at"] is not None and support.batch_row(batch_id)["deleted_at"] is not None
    assert support.task_row(waiting)["deleted_at"] is None and support.task_row(theirs)["deleted_at"] is None
    assert (storage().root / support.task_row(theirs)["output_path"]).exists()
    unknown = runner.invoke(user, ["purge", "nobody-at-all", "--yes"])
    assert unknown.exit_code == 1 and "no user 'nobody-at-all'" in unknown.output


# ------------------------------------------------------------------ what a deleted row keeps (issue 26, item 8)

KEPT = ("id", "owner_id", "batch_id", "state", "error_code", "attempts", "width", "height", "created_at", "finished_at")
ERASED = {"filename": "", "options": {}, "error": None, "idem_key": None, "input_key": "erased", "output_path": ""}


def named(client, seed: int, name: str) -> str:
    """An upload with options of its own (the edge controls say something of the photo too)."""
    body = {"file": (io.BytesIO(png_bytes(seed)), name), "format": "webp", "feather": "3"}
    response = client.post("/api/v1/images", data=body, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    return response.get_json()["task_id"]


def finish_with(task_id: str, state: str, error: str | None) -> dict:
    finish(task_id, state)
    with db.transaction() as cur:
        cur.execute(
            "UPDATE tasks SET error = %s, error_code = %s, idem_key = 'k', width = 64, height = 48, attempts = 2"
            " WHERE id = %s",
            (error, "refused" if error else None, task_id),
        )
    return support.task_row(task_id)


def owner_load(owner_id) -> dict:
    from cvunet_matting.db import reads

    with db.transaction() as cur:
        return dict(reads.owner_load(cur, owner_id))


def test_a_deleted_image_keeps_its_counts_and_times_not_its_name(app, alice):
    client = support.user_client(app, alice)
    task_id = named(client, 490, "anna-on-the-beach.png")
    before = finish_with(task_id, "failure", "anna-on-the-beach.png could not be decoded")
    assert before["options"] and "anna" in before["output_path"]
    load = owner_load(alice.id)
    assert client.delete(f"/api/v1/tasks/{task_id}").status_code == 200
    after = support.task_row(task_id)
    assert owner_load(alice.id) == load  # a refused input still does not count toward the day
    assert {k: after[k] for k in ERASED} == ERASED
    assert {k: after[k] for k in KEPT} == {k: before[k] for k in KEPT}
    assert after["deleted_at"] is not None and after["purged_at"] is not None
    assert "anna" not in repr(after)


def test_user_purge_erases_what_earlier_deletions_left(app, alice):
    """An erasure request: a deletion whose web process died before its files went (its row keeps
    the paths until they are removed, the sweep's only lead) is finished now, not at the next sweep."""
    from click.testing import CliRunner

    from cvunet_matting.commands.users import user
    from cvunet_matting.db import writes

    client = support.user_client(app, alice)
    earlier, kept = named(client, 491, "anna-at-home.png"), named(client, 492, "anna-at-work.png")
    rows = {task_id: finish_with(task_id, "success", None) for task_id in (earlier, kept)}
    with db.transaction() as cur:
        writes.delete_tasks(cur, [uuid.UUID(earlier)])  # then the crash: no files removed
    left = storage().root / rows[earlier]["output_path"]
    assert left.exists() and support.task_row(earlier)["filename"] == ""  # the name goes with the delete itself

    purged = CliRunner().invoke(user, ["purge", alice.name, "--yes"])
    assert purged.exit_code == 0, purged.output
    assert not left.exists() and not storage().input_path(rows[earlier]["input_key"]).exists()
    for task_id in (earlier, kept):
        after = support.task_row(task_id)
        assert {k: after[k] for k in ERASED} == ERASED and after["purged_at"] is not None, task_id
        assert "anna" not in repr(after)


def test_a_deleted_folder_batch_keeps_no_folder_name(app, alice):
    from cvunet_matting.cleanup.deleting import delete_batch

    batch_id = submit_batch(support.user_client(app, alice), [493])
    rows = support.rows_of(batch_id)
    finish(str(rows[0]["id"]))
    with db.transaction() as cur:  # as a folder batch that ended with an error records them
        cur.execute(
            "UPDATE batches SET state = 'done', source = '/srv/photos/anna', error = 'anna.png: too many pixels'"
            " WHERE id = %s",
            (batch_id,),
        )
    delete_batch(storage(), batch_id)
    batch = support.batch_row(batch_id)
    assert (batch["source"], batch["options"], batch["error"]) == ("folder", {}, None)
    assert (batch["total"], batch["state"]) == (1, "done") and batch["deleted_at"] is not None


def test_migration_008_erases_what_earlier_deletions_and_expiries_kept(app, alice):
    """Rows deleted or expired before the scrub existed: upgraded, they keep what the new ones keep;
    a deletion whose files are not purged yet keeps its paths (the sweep's lead) until they are."""
    from cvunet_matting.db import schema

    client = support.user_client(app, alice)
    ids = {
        name: named(client, 494 + n, f"anna-{name}.png") for n, name in enumerate(("purged", "unpurged", "old", "kept"))
    }
    rows = {name: finish_with(task_id, "success", None) for name, task_id in ids.items()}
    with db.transaction() as cur:  # as the code before the scrub left them
        cur.execute(
            "UPDATE tasks SET deleted_at = now(), expired_at = now(), purged_at = CASE WHEN id = %s THEN now() END"
            " WHERE id = ANY(%s::uuid[])",
            (ids["purged"], [ids["purged"], ids["unpurged"]]),
        )
        cur.execute("UPDATE tasks SET expired_at = now() WHERE id = %s", (ids["old"],))
        cur.execute(dict(schema.migrations())[8])
    for name in ("purged", "old"):
        after = support.task_row(ids[name])
        assert {k: after[k] for k in ERASED} == ERASED and "anna" not in repr(after), name
    unpurged = support.task_row(ids["unpurged"])
    assert (unpurged["filename"], unpurged["options"]) == ("", {})
    assert unpurged["output_path"] == rows["unpurged"]["output_path"] and unpurged["input_key"]
    assert support.task_row(ids["kept"]) == rows["kept"]
