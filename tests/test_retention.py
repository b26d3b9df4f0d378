"""Retention on rows and files made old on purpose: what is past CVUNET_RETENTION_DAYS goes, what a
kept task still needs stays, and the rows remain as history, marked expired."""

from __future__ import annotations

import uuid

import pytest

from cvunet_matting import db
from cvunet_matting.db import writes
from cvunet_matting.retention import expire
from cvunet_matting.storage import Storage
from tests import support
from tests.support import png_bytes

pytestmark = [pytest.mark.services]


def add_task(storage: Storage, data: bytes, days_old: float, batch_id=None, name: str = "a.png") -> dict:
    """A finished task `days_old` days ago, with its input and result files on disk."""
    row = {
        "id": uuid.uuid4(),
        "batch_id": batch_id,
        "filename": name,
        "input_key": storage.put_input(data),
        "options": {},
        "output_path": f"outputs/retention/{uuid.uuid4()}/{name}",
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
    assert not (storage.root / shared_old["output_path"]).exists()
    assert storage.input_path(shared_new["input_key"]).exists()  # a kept task still reads it
    assert (storage.root / recent["output_path"]).exists() and (storage.root / shared_new["output_path"]).exists()
    assert expired_at("tasks", old["id"]) is not None and expired_at("tasks", recent["id"]) is None
    assert results_of(old["id"]) == 0 and results_of(recent["id"]) == 1  # no reuse of a removed file
    assert expire(settings)["tasks"] == 0  # nothing twice


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
