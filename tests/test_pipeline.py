"""The queue-backed pipeline end to end: real Redis, Postgres and Celery worker processes (no eager mode)."""

from __future__ import annotations

import json
import os
import zipfile

import pytest

from cvunet_matting import db
from cvunet_matting.config import load_settings
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.imaging import decode
from cvunet_matting.image.matting import MODEL_STAGES
from cvunet_matting.pipeline.submission import Item, submit_batch, submit_image
from tests import support
from tests.support import batch_row, png_bytes, rows_of, settings, task_row, wait_batch, wait_task

pytestmark = [pytest.mark.services, pytest.mark.stack]
PNG = OutputOptions()


def test_single_image_end_to_end(clean_state, worker_factory):
    from celery.result import AsyncResult

    worker_factory()
    task_id = submit_image(Item("cat photo.png", png_bytes(1)), PNG)
    row = wait_task(task_id)
    output = load_settings().data_dir / row["output_path"]
    assert output.name == "cat photo.png" and output.exists()
    assert decode(output.read_bytes(), 10**6).shape == (48, 64, 3)
    assert row["attempts"] == 1 and row["worker"].startswith("cpu0@")
    assert all(row["timings"].get(stage, 0) > 0 for stage in MODEL_STAGES), row["timings"]
    result = AsyncResult(task_id)
    assert result.get(timeout=10)["state"] == "success" and result.state == "SUCCESS"


def test_batch_of_50_in_chunks_agrees_with_postgres(clean_state, worker_factory):
    worker_factory()
    items = [Item(f"img{i:02d}.png", png_bytes(i)) for i in range(50)]
    batch_id = submit_batch(items, PNG, settings=settings(CVUNET_BATCH_CHUNK=8))
    batch = wait_batch(batch_id)
    rows = rows_of(batch_id)
    assert [r["state"] for r in rows] == ["success"] * 50
    assert len({r["chunk"] for r in rows}) == 7
    root = load_settings().data_dir
    with zipfile.ZipFile(root / batch["zip_path"]) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
    assert names == {f"img{i:02d}.png" for i in range(50)} | {"manifest.json"}
    assert [e["state"] for e in manifest["items"]] == ["success"] * 50
    assert (root / batch["output_dir"]).name.startswith("outputs_")


def test_a_pool_process_replaced_every_few_tasks_loses_and_repeats_nothing(clean_state, worker_factory):
    from cvunet_matting.celery_app import app

    worker_factory("cpu0@%h", CVUNET_MAX_TASKS_PER_CHILD="3")

    def pool() -> dict:
        (stats,) = (app.control.inspect(timeout=2).stats() or {}).values()
        return stats["pool"]

    before = pool()
    assert before["max-tasks-per-child"] == 3
    batch_id = submit_batch([Item(f"r{i}.png", png_bytes(60 + i)) for i in range(8)], PNG)
    wait_batch(batch_id)
    rows = rows_of(batch_id)
    assert [(r["state"], r["attempts"]) for r in rows] == [("success", 1)] * 8  # a replacement is no crash
    assert set(pool()["processes"]).isdisjoint(before["processes"])


def test_broken_files_fail_with_reasons_and_the_batch_completes(clean_state, worker_factory):
    worker_factory()
    good = [Item(f"ok{i}.png", png_bytes(i)) for i in range(4)]
    bad = [Item("empty.jpg", b""), Item("notes.png", b"just some text"), Item("cut.png", png_bytes(9)[:200])]
    batch_id = submit_batch(good + bad, PNG)
    wait_batch(batch_id)
    states = {r["filename"]: (r["state"], r["error"]) for r in rows_of(batch_id)}
    assert all(states[f"ok{i}.png"] == ("success", None) for i in range(4))
    for name in ("empty.jpg", "notes.png", "cut.png"):
        state, error = states[name]
        assert state == "failure" and error, name
    assert "empty" in states["empty.jpg"][1].lower()


def test_identical_request_reuses_the_result(clean_state, worker_factory):
    worker_factory()
    first = submit_image(Item("a.png", png_bytes(5)), PNG)
    wait_task(first)
    second = submit_image(Item("again.png", png_bytes(5)), PNG)
    row = wait_task(second)
    assert row["reused"] is True and row["timings"] is None
    assert row["idem_key"] == task_row(first)["idem_key"]
    third = submit_image(Item("a.png", png_bytes(5)), OutputOptions(format="webp"))
    row = wait_task(third)
    assert row["reused"] is False  # other output options: another result
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM results")
        assert cur.fetchone()["n"] == 2


def test_a_result_is_reused_within_one_owner_only(clean_state, worker_factory):
    """An instant answer to a second user would tell them someone else had sent that very photo."""
    from cvunet_matting.accounts import users as accounts

    alice, bob = (accounts.by_key(support.make_user(prefix=name).key) for name in ("alice", "bob"))
    worker_factory()
    first = wait_task(submit_image(Item("a.png", png_bytes(6)), PNG, owner=alice))
    again = wait_task(submit_image(Item("a-again.png", png_bytes(6)), PNG, owner=alice))
    theirs = wait_task(submit_image(Item("b.png", png_bytes(6)), PNG, owner=bob))
    assert (first["reused"], again["reused"], theirs["reused"]) == (False, True, False)
    assert again["idem_key"] == first["idem_key"] != theirs["idem_key"]


def test_poisoned_input_fails_after_three_crashes_and_the_queue_moves_on(clean_state, worker_factory):
    from cvunet_matting.storage.files import sha256_bytes

    poison = png_bytes(99)
    worker_factory(CVUNET_TEST_CRASH_ON=sha256_bytes(poison))
    items = [Item("poison.png", poison)] + [Item(f"ok{i}.png", png_bytes(i)) for i in range(3)]
    batch_id = submit_batch(items, PNG)
    wait_batch(batch_id, timeout=180)
    rows = {r["filename"]: r for r in rows_of(batch_id)}
    assert rows["poison.png"]["state"] == "failure"
    assert "died 3 times" in rows["poison.png"]["error"]
    assert rows["poison.png"]["attempts"] == 4  # three crashed starts, and the one that gave up
    assert all(rows[f"ok{i}.png"]["state"] == "success" for i in range(3))


def test_a_large_batch_keeps_redis_small(clean_state, worker_factory):
    worker_factory()
    items = [Item(f"i{i}.png", png_bytes(1000 + i, (8, 8))) for i in range(400)]
    batch_id = submit_batch(items, PNG, settings=settings(CVUNET_BATCH_CHUNK=25))
    client, lengths = support.redis(), []

    def done() -> bool:
        lengths.append(client.llen("matting"))
        return batch_row(batch_id)["state"] == "done"

    support.wait_until(done, 300, interval=0.05, message=f"batch {batch_id} not done")
    peak = max(lengths)
    assert [r["state"] for r in rows_of(batch_id)] == ["success"] * 400
    assert 0 < peak <= 50  # two chunks of 25 in flight at most, never the whole batch


def test_requeue_stuck_tasks(clean_state):
    from cvunet_matting.recovery.requeue import requeue

    task_id = submit_image(Item("stuck.png", png_bytes(3)), PNG)  # no worker: it stays pending
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET event_at = now() - interval '20 minutes' WHERE id = %s", (task_id,))
    assert [str(r["id"]) for r in requeue(False, 30 * 60, dry_run=True)] == []
    assert [str(r["id"]) for r in requeue(False, 15 * 60, dry_run=True)] == [task_id]
    assert [str(r["id"]) for r in requeue(False, 15 * 60)] == [task_id]
    assert task_row(task_id)["state"] == "pending"
    # The original message is removed before the new one is published: it can never run twice.
    queued = [json.loads(raw)["headers"]["id"] for raw in support.redis().lrange("matting", 0, -1)]
    assert queued == [task_id]


def test_sigterm_lets_the_worker_finish_the_image_in_hand(clean_state, worker_factory, real_model_path):
    import signal

    proc = worker_factory("cpu0@%h", CVUNET_MODEL="isnet-fp16")
    task_id = submit_image(Item("slow.png", png_bytes(4, (256, 256))), PNG)
    wait_task(task_id, "started")
    os.kill(proc.pid, signal.SIGTERM)  # warm shutdown, as `docker stop` sends it to the main process
    assert proc.wait(timeout=60) == 0
    row = task_row(task_id)
    assert row["state"] == "success" and row["attempts"] == 1


def test_worker_serves_prometheus_metrics(clean_state, worker_factory):
    import urllib.request

    port = support.free_port()
    worker_factory(CVUNET_METRICS_PORT=str(port))
    task_id = submit_image(Item("m.png", png_bytes(77)), PNG)
    wait_task(task_id)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    text = support.wait_until(
        lambda: 'cvunet_worker_tasks_total{state="success"} 1.0' in (t := scrape()) and t, 10, message="success counted"
    )
    assert 'cvunet_worker_stage_seconds_count{stage="inference"} 1.0' in text
    assert "cvunet_gpu_memory_used_bytes" not in text  # no GPU here: no NVML figures, no error


def test_the_worker_scores_each_cut_out_for_the_row_the_manifest_and_metrics(clean_state, worker_factory):
    """The tiny model's alpha is the brightness: a white disc is a sure cut-out, a grey one a see-through
    subject (issue #27's cat); the score reaches the rows, the ZIP's manifest, /metrics and a reuse."""
    import re
    import urllib.request

    import cv2
    import numpy as np

    from cvunet_matting.image.confidence import DOUBTFUL

    def disc_png(level: int) -> bytes:
        image = np.zeros((120, 160, 3), np.uint8)
        cv2.circle(image, (80, 60), 45, (level, level, level), -1, cv2.LINE_AA)
        return cv2.imencode(".png", image)[1].tobytes()

    port = support.free_port()
    worker_factory(CVUNET_METRICS_PORT=str(port))
    batch_id = submit_batch([Item("sure.png", disc_png(255)), Item("unsure.png", disc_png(170))], PNG)
    batch = wait_batch(batch_id)
    scores = {row["filename"]: row["confidence"] for row in rows_of(batch_id)}
    assert scores["sure.png"] == 1.0 and scores["unsure.png"] < DOUBTFUL, scores
    with zipfile.ZipFile(load_settings().data_dir / batch["zip_path"]) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert {e["filename"]: e["confidence"] for e in manifest["items"]} == scores

    again = wait_task(submit_image(Item("again.png", disc_png(170)), PNG))
    assert again["reused"] is True and again["confidence"] == scores["unsure.png"]

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()

    text = support.wait_until(
        lambda: 'cvunet_worker_tasks_total{state="success"} 3.0' in (t := scrape()) and t, 10, message="counted"
    )
    counted = re.search(r"^cvunet_worker_confidence_count (\S+)$", text, re.M)
    doubtful = re.search(r'^cvunet_worker_confidence_bucket\{le="0.8"\} (\S+)$', text, re.M)
    assert counted and float(counted.group(1)) == 2.0  # the reuse is not scored again
    assert doubtful and float(doubtful.group(1)) == 1.0
