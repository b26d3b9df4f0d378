"""Retention on rows and files made old on purpose: what is past CVUNET_RETENTION_DAYS goes, what a
kept task still needs stays, and the rows remain as history, marked expired: the API and the pages
say so and offer no files, and the downloads answer 410 to the owner (404 to anyone else, as before)."""

from __future__ import annotations

import json
import uuid

import cv2
import pytest

from cvunet_matting import db
from cvunet_matting.cleanup.retention import expire
from cvunet_matting.db import writes
from cvunet_matting.storage.files import Storage, raw_matte_path
from cvunet_matting.web import create_app
from tests import support
from tests.support import png_bytes

pytestmark = [pytest.mark.services]


def add_task(
    storage: Storage,
    data: bytes,
    days_old: float,
    batch_id=None,
    name: str = "a.png",
    owner=None,
    folder: str | None = None,
) -> dict:
    """A finished task `days_old` days ago, with its input and result files on disk (in `folder`, or one of its own)."""
    row = {
        "id": uuid.uuid4(),
        "batch_id": batch_id,
        "filename": name,
        "input_key": storage.put_input(data),
        "options": {},
        "output_path": f"{folder or f'outputs/retention/{uuid.uuid4()}'}/{name}",
    }
    result = storage.root / row["output_path"]
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_bytes(b"result")
    with db.transaction() as cur:
        writes.create_tasks(cur, [row])
        cur.execute(
            "UPDATE tasks SET state = 'success', finished_at = now() - make_interval(days => %s) WHERE id = %s",
            (days_old, row["id"]),
        )
        cur.execute(
            "INSERT INTO results (idem_key, output_path, task_id) VALUES (%s, %s, %s)",
            (uuid.uuid4().hex, row["output_path"], row["id"]),
        )
        if owner is not None:
            writes.set_owner(cur, owner, task_ids=[row["id"]])
    return row


def expired_at(table: str, row_id) -> object:
    with db.transaction() as cur:
        cur.execute(f"SELECT expired_at FROM {table} WHERE id = %s", (row_id,))  # noqa: S608 (fixed names)
        return cur.fetchone()["expired_at"]


def results_of(task_id) -> int:
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM results WHERE task_id = %s", (task_id,))
        return cur.fetchone()["n"]


def test_old_results_and_inputs_go_and_what_is_kept_stays(clean_state):
    settings = support.settings(CVUNET_RETENTION_DAYS=30)
    storage = Storage(settings.data_dir)
    old = add_task(storage, png_bytes(1), days_old=45)
    shared_old = add_task(storage, png_bytes(2), days_old=45, name="b.png")
    shared_new = add_task(storage, png_bytes(2), days_old=1, name="b-again.png")  # the same input bytes
    recent = add_task(storage, png_bytes(3), days_old=29)

    assert expire(settings, dry_run=True)["tasks"] == 2
    assert (storage.root / old["output_path"]).exists()  # a dry run removes nothing

    done = expire(settings)
    assert done["tasks"] == 2 and done["files"] == 2 and done["inputs"] == 1
    assert not (storage.root / old["output_path"]).exists() and not storage.input_path(old["input_key"]).exists()
    assert not (storage.root / old["output_path"]).parent.exists()  # a single image's own folder goes too
    assert not (storage.root / shared_old["output_path"]).exists()
    assert storage.input_path(shared_new["input_key"]).exists()  # a kept task still reads it
    assert (storage.root / recent["output_path"]).exists() and (storage.root / shared_new["output_path"]).exists()
    assert expired_at("tasks", old["id"]) is not None and expired_at("tasks", recent["id"]) is None
    assert results_of(old["id"]) == 0 and results_of(recent["id"]) == 1  # no reuse of a removed file
    assert expire(settings)["tasks"] == 0  # nothing twice


def test_files_refused_on_arrival_expire_beside_the_rest(clean_state):
    """A refused upload is a row with no input (its key ''): retention raised on it, after marking its
    page expired and before removing that page's files, which were then left on disk for good."""
    settings = support.settings(CVUNET_RETENTION_DAYS=30)
    storage = Storage(settings.data_dir)
    kept_file = add_task(storage, png_bytes(4), days_old=45)
    refused = {"id": uuid.uuid4(), "filename": "empty.png", "input_key": "", "options": {}, "output_path": "x/e.png"}
    with db.transaction() as cur:
        writes.create_tasks(cur, [refused])
        writes.refuse_listed(cur, {refused["id"]: "the file is empty"})
        cur.execute("UPDATE tasks SET finished_at = now() - interval '45 days' WHERE id = %s", (refused["id"],))
    done = expire(settings)
    assert done["tasks"] == 2 and done["files"] == 1 and done["inputs"] == 1
    assert not (storage.root / kept_file["output_path"]).exists()
    assert expired_at("tasks", refused["id"]) is not None


def test_a_batch_expires_with_its_last_task_and_its_archive_goes(clean_state):
    settings = support.settings(CVUNET_RETENTION_DAYS=7)
    storage = Storage(settings.data_dir)
    batch_id = uuid.uuid4()
    out_dir = storage.outputs / "outputs_20260101000000"
    out_dir.mkdir(parents=True)
    (out_dir / "outputs_20260101000000.zip").write_bytes(b"zip")
    (out_dir / "manifest.json").write_bytes(b"{}")
    with db.transaction() as cur:
        writes.create_batch(cur, batch_id, "upload", 2, {}, storage.relative(out_dir), chunks=1)
        writes.finish_batch(
            cur,
            batch_id,
            storage.relative(out_dir / "outputs_20260101000000.zip"),
            storage.relative(out_dir / "manifest.json"),
        )
        cur.execute("UPDATE batches SET finished_at = now() - interval '10 days' WHERE id = %s", (batch_id,))
    add_task(storage, png_bytes(4), days_old=10, batch_id=batch_id)
    kept = add_task(storage, png_bytes(5), days_old=2, batch_id=batch_id, name="late-retry.png")

    assert expire(settings)["batches"] == 0  # one of its tasks finished two days ago: kept
    assert (out_dir / "outputs_20260101000000.zip").exists()
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET finished_at = now() - interval '8 days' WHERE id = %s", (kept["id"],))
    done = expire(settings)
    assert done["batches"] == 1 and expired_at("batches", batch_id) is not None
    assert not (out_dir / "outputs_20260101000000.zip").exists() and not (out_dir / "manifest.json").exists()


def test_retention_zero_keeps_everything(clean_state):
    settings = support.settings(CVUNET_RETENTION_DAYS=0)
    row = add_task(Storage(settings.data_dir), png_bytes(6), days_old=4000)
    assert expire(settings) == {"tasks": 0, "batches": 0, "inputs": 0, "files": 0}
    assert (settings.data_dir / row["output_path"]).exists()


# ------------------------------------------------------------------ what clients are told of expired rows

RETENTION = 30  # the default, which the app below reads too: its messages name it


@pytest.fixture
def app(clean_state):
    return create_app({"TESTING": True, "CVUNET_RETENTION_DAYS": str(RETENTION)})


@pytest.fixture
def alice(app):
    return support.make_user(prefix="alice")


def add_batch(storage: Storage, owner, days_old: float) -> uuid.UUID:
    """A finished batch with its ZIP and one task of `days_old` days, owned by `owner`."""
    batch_id, out_dir = uuid.uuid4(), storage.outputs / f"outputs_{uuid.uuid4().hex}"
    out_dir.mkdir(parents=True)
    (out_dir / "batch.zip").write_bytes(b"zip")
    with db.transaction() as cur:
        writes.create_batch(cur, batch_id, "upload", 1, {}, storage.relative(out_dir), chunks=1)
        writes.finish_batch(cur, batch_id, storage.relative(out_dir / "batch.zip"), None)
        cur.execute(
            "UPDATE batches SET finished_at = now() - make_interval(days => %s) WHERE id = %s", (days_old, batch_id)
        )
    add_task(storage, png_bytes(20 + int(days_old)), days_old=days_old, batch_id=batch_id, name="in-batch.png")
    with db.transaction() as cur:
        writes.set_owner(cur, owner, batch_id=batch_id)
    return batch_id


def test_an_expired_task_says_so_and_its_files_answer_410(app, alice):
    settings = support.settings(CVUNET_RETENTION_DAYS=RETENTION)
    storage = Storage(settings.data_dir)
    old = add_task(storage, png_bytes(7), days_old=RETENTION + 5, name="old.png", owner=alice.id)
    kept = add_task(storage, png_bytes(8), days_old=1, name="kept.png", owner=alice.id)
    expire(settings)
    api = app.test_client()

    body = api.get(f"/api/v1/tasks/{old['id']}", headers=alice.bearer).get_json()
    assert body["state"] == "success" and body["expired"] is True and body["expired_at"]  # the record stays
    assert not {"result_url", "alpha_url", "input_url"} & set(body)
    fresh = api.get(f"/api/v1/tasks/{kept['id']}", headers=alice.bearer).get_json()
    assert fresh["expired"] is False and fresh["expired_at"] is None
    assert {"result_url", "alpha_url", "input_url"} <= set(fresh)

    for kind in ("result", "alpha", "input"):
        response = api.get(f"/api/v1/tasks/{old['id']}/{kind}", headers=alice.bearer)
        error = response.get_json()["error"]
        assert response.status_code == 410 and error["code"] == "expired", kind
        assert f"after {RETENTION} days" in error["message"] and error["expired_at"] == body["expired_at"]
    assert api.get(f"/api/v1/tasks/{kept['id']}/result", headers=alice.bearer).status_code == 200
    with db.transaction() as cur:  # even a failed one: its input went with it
        cur.execute("UPDATE tasks SET state = 'failure', error_code = 'storage' WHERE id = %s", (old["id"],))
    retried = api.post(f"/api/v1/tasks/{old['id']}/retry", headers=alice.bearer)
    assert retried.status_code == 409 and retried.get_json()["error"]["code"] == "expired_task"
    spec = api.get("/api/v1/openapi.json").get_json()
    assert "410" in spec["paths"]["/api/v1/tasks/{id}/result"]["get"]["responses"]


def test_expiry_is_told_only_to_whoever_may_see_the_task(app, alice):
    settings = support.settings(CVUNET_RETENTION_DAYS=RETENTION)
    old = add_task(Storage(settings.data_dir), png_bytes(9), days_old=RETENTION + 1, owner=alice.id)
    expire(settings)
    bob = support.make_user(prefix="bob")
    api = app.test_client()
    for path in (f"/api/v1/tasks/{old['id']}", f"/api/v1/tasks/{old['id']}/result"):
        response = api.get(path, headers=bob.bearer)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found", path
    bob_pages = support.user_client(app, bob)
    assert bob_pages.get(f"/page/tasks/{old['id']}/input").status_code == 404
    assert support.user_client(app, alice).get(f"/page/tasks/{old['id']}/input").status_code == 410


def test_the_pages_say_expired_instead_of_offering_files(app, alice):
    settings = support.settings(CVUNET_RETENTION_DAYS=RETENTION)
    storage = Storage(settings.data_dir)
    old = add_task(storage, png_bytes(10), days_old=RETENTION + 2, name="old-photo.png", owner=alice.id)
    kept = add_task(storage, png_bytes(11), days_old=2, name="new-photo.png", owner=alice.id)
    expire(settings)
    pages = support.user_client(app, alice)

    html = pages.get(f"/tasks/{old['id']}").get_data(as_text=True)
    assert "state-expired" in html and "Expired" in html
    assert f"/page/tasks/{old['id']}/" not in html  # no download, no preview
    kept_html = pages.get(f"/tasks/{kept['id']}").get_data(as_text=True)
    assert "state-expired" not in kept_html and f"/page/tasks/{kept['id']}/result" in kept_html
    history = pages.get("/history").get_data(as_text=True)
    assert history.count('class="badge state-expired"') == 1 and f"/page/tasks/{old['id']}/result" not in history


def test_an_expired_batch_offers_no_zip_and_its_zip_answers_410(app, alice):
    settings = support.settings(CVUNET_RETENTION_DAYS=RETENTION)
    storage = Storage(settings.data_dir)
    old = add_batch(storage, alice.id, days_old=RETENTION + 3)
    kept = add_batch(storage, alice.id, days_old=3)
    expire(settings)
    api = app.test_client()

    body = api.get(f"/api/v1/batches/{old}", headers=alice.bearer).get_json()
    assert body["expired"] is True and body["expired_at"] and "zip_url" not in body
    assert body["items"][0]["expired"] is True and "result_url" not in body["items"][0]
    response = api.get(f"/api/v1/batches/{old}/zip", headers=alice.bearer)
    assert response.status_code == 410 and response.get_json()["error"]["code"] == "expired"
    assert "the batch's record is kept" in response.get_json()["error"]["message"]
    fresh = api.get(f"/api/v1/batches/{kept}", headers=alice.bearer).get_json()
    assert fresh["expired"] is False and "zip_url" in fresh
    assert api.get(f"/api/v1/batches/{kept}/zip", headers=alice.bearer).status_code == 200

    html = support.user_client(app, alice).get(f"/batches/{old}").get_data(as_text=True)
    assert "state-expired" in html and "Download ZIP" not in html


def test_expiry_removes_the_alpha_matte_derived_beside_a_result(app, alice):
    settings = support.settings(CVUNET_RETENTION_DAYS=RETENTION)
    storage = Storage(settings.data_dir)
    batch_id, folder = uuid.uuid4(), storage.outputs / "outputs_20260102000000"
    folder.mkdir(parents=True)
    with db.transaction() as cur:
        writes.create_batch(cur, batch_id, "upload", 1, {}, storage.relative(folder), chunks=1)
        writes.finish_batch(cur, batch_id, None, None)
        cur.execute("UPDATE batches SET finished_at = now() - interval '40 days' WHERE id = %s", (batch_id,))
        writes.set_owner(cur, alice.id, batch_id=batch_id)
    cut_out = cv2.imencode(".png", support.noise((48, 64, 4), 12))[1].tobytes()
    old = add_task(storage, png_bytes(12), RETENTION + 10, batch_id, "old.png", alice.id, storage.relative(folder))
    (storage.root / old["output_path"]).write_bytes(cut_out)
    kept = add_task(storage, png_bytes(13), days_old=1, name="kept.png", owner=alice.id)
    (storage.root / kept["output_path"]).write_bytes(cut_out)
    api = app.test_client()
    for task in (old, kept):  # served once: each matte is now stored beside its result
        assert api.get(f"/api/v1/tasks/{task['id']}/alpha", headers=alice.bearer).status_code == 200
        raw_matte_path(storage.root / task["output_path"]).write_bytes(b"the raw matte a worker keeps")
    kept_folder = (storage.root / kept["output_path"]).parent
    assert len(list(folder.iterdir())) == len(list(kept_folder.iterdir())) == 3

    done = expire(settings)
    assert done["tasks"] == 1 and done["batches"] == 1 and done["files"] == 3  # the result and its mattes
    assert not folder.exists()  # nothing left in the batch's folder, so it went too
    assert len(list(kept_folder.iterdir())) == 3  # a kept result keeps its mattes


def test_requeue_of_failures_leaves_expired_ones_alone(clean_state):
    """`requeue --failed` republished failures retention had expired: their inputs were gone, so they
    failed again, and each one's batch was reopened and its ZIP rebuilt where retention never looks again."""
    from cvunet_matting.recovery.requeue import requeue

    settings = support.settings(CVUNET_RETENTION_DAYS=30)
    storage = Storage(settings.data_dir)
    old, recent = add_task(storage, png_bytes(7), days_old=45), add_task(storage, png_bytes(8), days_old=1)
    with db.transaction() as cur:
        cur.execute(
            "UPDATE tasks SET state = 'failure', error_code = 'storage' WHERE id = ANY(%s)",
            ([old["id"], recent["id"]],),
        )
    expire(settings)
    assert [row["id"] for row in requeue(failed=True, stuck_seconds=None, dry_run=True)] == [recent["id"]]


def test_an_expired_row_keeps_its_counts_and_times_not_its_name(clean_state):
    """What deleting erases (test_delete.py), retention erases too, once its period is over."""
    settings = support.settings(CVUNET_RETENTION_DAYS=30)
    storage = Storage(settings.data_dir)
    old = add_task(storage, png_bytes(6), days_old=45, name="anna-on-the-beach.png")
    with db.transaction() as cur:
        cur.execute(
            "UPDATE tasks SET options = '{\"format\": \"webp\"}', error = 'anna', idem_key = 'k', width = 64"
            " WHERE id = %s RETURNING *",
            (old["id"],),
        )
        before = cur.fetchone()
    expire(settings)
    after = support.task_row(str(old["id"]))
    assert (after["filename"], after["options"], after["error"], after["idem_key"]) == ("", {}, None, None)
    assert (after["input_key"], after["output_path"]) == ("erased", "")
    kept = ("id", "state", "created_at", "finished_at", "width", "attempts")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
    assert after["expired_at"] is not None and "anna" not in repr(after)


def test_the_pages_name_an_expired_image_without_its_name(app, alice):
    client = support.user_client(app, alice)
    storage = Storage(support.settings().data_dir)
    row = add_task(storage, png_bytes(7), days_old=45, owner=alice.id, name="anna.png")
    expire(support.settings(CVUNET_RETENTION_DAYS=30))
    page = client.get(f"/tasks/{row['id']}").get_data(as_text=True)
    assert "(name removed with its files)" in page and "anna" not in page
    assert "(name removed with its files)" in client.get("/history").get_data(as_text=True)


def test_retention_waits_while_the_data_root_cannot_be_written(clean_state, monkeypatch):
    """Rows are marked and erased before their files go: on a read-only root the files would stay
    for good, with no row left to find them by."""
    from cvunet_matting.storage.files import StorageAway

    settings = support.settings(CVUNET_RETENTION_DAYS=30)
    storage = Storage(settings.data_dir)
    old = add_task(storage, png_bytes(8), days_old=45)
    monkeypatch.setattr(Storage, "writable", lambda self, folder=None: False)
    with pytest.raises(StorageAway):
        expire(settings)
    assert expired_at("tasks", old["id"]) is None and (storage.root / old["output_path"]).exists()
    monkeypatch.undo()
    assert expire(settings)["tasks"] == 1 and not (storage.root / old["output_path"]).exists()


def test_a_background_image_expires_with_the_last_task_that_names_it(clean_state):
    """A background image (options.bg_image) is an input of every task that names it: kept while one
    of them is, removed with the last."""
    settings = support.settings(CVUNET_RETENTION_DAYS=30)
    storage = Storage(settings.data_dir)
    key = storage.put_input(png_bytes(9))
    old = add_task(storage, png_bytes(7), days_old=45)
    recent = add_task(storage, png_bytes(8), days_old=1, name="c.png")
    with db.transaction() as cur:
        cur.execute(
            "UPDATE tasks SET options = %s WHERE id = ANY(%s)",
            (json.dumps({"bg_image": key}), [old["id"], recent["id"]]),
        )
    assert expire(settings)["inputs"] == 1  # the old task's own input only
    assert storage.input_path(key).exists()  # the recent task still draws on it
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET finished_at = now() - interval '45 days' WHERE id = %s", (recent["id"],))
    assert expire(settings)["inputs"] == 2 and not storage.input_path(key).exists()
