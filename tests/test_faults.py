"""Faults mid-batch with the real model: a worker killed, Redis flushed, Postgres unreachable, a requeue.

Each ends with every input having exactly one result and one Postgres row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from cvunet_matting import db
from cvunet_matting.config import load_settings
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.pipeline.submission import Item, submit_batch
from tests import support
from tests.support import png_bytes, rows_of, settings, wait_batch

pytestmark = [pytest.mark.services, pytest.mark.stack, pytest.mark.model]
ISNET = {"CVUNET_MODEL": "isnet-fp16"}


def photos(count: int) -> list[Item]:
    return [Item(f"photo{i}.png", png_bytes(100 + i, (256, 256))) for i in range(count)]


def successes(batch_id: str) -> int:
    return sum(r["state"] == "success" for r in rows_of(batch_id))


def in_hand(batch_id: str) -> bool:
    return any(r["state"] == "started" for r in rows_of(batch_id))


def assert_each_once(batch_id: str, count: int) -> None:
    rows = rows_of(batch_id)
    assert len(rows) == count and all(r["state"] == "success" for r in rows), [
        (r["filename"], r["state"]) for r in rows
    ]
    out_dir = load_settings().data_dir / os.path.dirname(rows[0]["output_path"])
    produced = sorted(p.name for p in out_dir.iterdir() if p.suffix == ".png")
    names = [f"photo{i}.png" for i in range(count)]
    assert produced == sorted(names + [f".{name}.raw.png" for name in names])  # no duplicates, no leftovers
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM results")
        assert cur.fetchone()["n"] == count


def test_worker_killed_mid_batch_loses_nothing(clean_state, worker_factory, real_model_path):
    first = worker_factory("cpu0@%h", **ISNET)
    batch_id = submit_batch(photos(6), OutputOptions())
    support.wait_until(lambda: successes(batch_id) >= 2, 120, message="two images done")
    # Kill only with an image in hand: right after a success the worker may be between tasks.
    support.wait_until(lambda: in_hand(batch_id), 30, message="an image in hand")
    support.kill_group(first)  # kill -9 the whole worker, the image in hand included
    assert successes(batch_id) < 6
    worker_factory("cpu1@%h", **ISNET)
    wait_batch(batch_id, timeout=180)
    assert_each_once(batch_id, 6)
    assert max(r["attempts"] for r in rows_of(batch_id)) >= 2  # the interrupted image ran again


def test_redis_flushed_mid_batch_then_reconcile(clean_state, worker_factory, real_model_path):
    worker_factory("cpu0@%h", **ISNET)
    batch_id = submit_batch(photos(7), OutputOptions(), settings=settings(CVUNET_BATCH_CHUNK=2))
    support.wait_until(lambda: successes(batch_id) >= 2 and _busy(), 120, message="two done, a third in hand")
    support.redis().flushdb()  # the queue, unacked tasks and chord counters are gone
    # At once, while the worker still runs an image whose chord counter is gone: reconcile waits
    # for it, or its chunk (and so the batch) would never complete.
    done = subprocess.run(
        [sys.executable, "-m", "cvunet_matting.commands.cli", "reconcile"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "re-enqueued" in done.stdout
    wait_batch(batch_id, timeout=180)
    assert_each_once(batch_id, 7)


def _busy() -> bool:
    from cvunet_matting.celery_app import app

    active = app.control.inspect(timeout=1).active() or {}
    return any(active.values())


def test_postgres_unreachable_mid_batch_mirror_catches_up(clean_state, worker_factory, real_model_path):
    proxy = support.TcpProxy(5432)
    url = os.environ["CVUNET_DATABASE_URL"].replace(":5432/", f":{proxy.port}/")
    worker_factory("cpu0@%h", CVUNET_DATABASE_URL=url, **ISNET)
    batch_id = submit_batch(photos(5), OutputOptions())
    support.wait_until(lambda: successes(batch_id) >= 1, 120, message="one image done")
    proxy.stop()  # from the worker's side, Postgres is down
    spool = load_settings().spool_dir
    support.wait_until(lambda: spool.exists() and any(spool.iterdir()), 60, message="events spooled while down")
    proxy = proxy.restart()
    try:
        batch = wait_batch(batch_id, timeout=180)
        assert_each_once(batch_id, 5)
        # Finalize waited for the spooled end events: the archive and manifest list every image.
        with zipfile.ZipFile(load_settings().data_dir / batch["zip_path"]) as archive:
            manifest = json.loads(archive.read("manifest.json"))
            assert sorted(archive.namelist()) == sorted([f"photo{i}.png" for i in range(5)] + ["manifest.json"])
        assert [item["state"] for item in manifest["items"]] == ["success"] * 5
        support.wait_until(lambda: not any(spool.iterdir()), 30, message="spool drained")
    finally:
        proxy.stop()


def test_requeue_failed_from_the_celery_cli(clean_state, worker_factory):
    strict = worker_factory("cpu0@%h", CVUNET_MAX_PIXELS="5000")  # a tiny pixel limit makes big images fail
    items = [Item("small.png", png_bytes(1, (20, 20))), Item("big.png", png_bytes(2, (100, 100)))]
    batch_id = submit_batch(items, OutputOptions())
    wait_batch(batch_id)
    failed = [r for r in rows_of(batch_id) if r["state"] == "failure"]
    assert [r["filename"] for r in failed] == ["big.png"] and "pixels" in failed[0]["error"]
    celery = [sys.executable, "-m", "celery", "-A", "cvunet_matting", "requeue", "--failed"]
    # Too many pixels is a refusal of the input: requeued only when asked for, as after raising the limit.
    plain = subprocess.run([*celery, "--dry-run"], capture_output=True, text=True)
    assert plain.returncode == 0 and "0 task(s) would be requeued" in plain.stdout, plain.stdout + plain.stderr
    assert "1 refused input(s) left failed: they would fail the same way (--include-refused)" in plain.stdout
    celery.append("--include-refused")
    dry = subprocess.run([*celery, "--dry-run"], capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "big.png" in dry.stdout and "1 task(s) would be requeued" in dry.stdout
    assert [r["state"] for r in rows_of(batch_id) if r["filename"] == "big.png"] == ["failure"]
    support.kill_group(strict)
    worker_factory("cpu1@%h")  # a worker with the default limit takes the requeued image
    done = subprocess.run([*celery, "--batch", batch_id], capture_output=True, text=True)
    assert done.returncode == 0 and "1 task(s) requeued" in done.stdout, done.stderr
    support.wait_until(lambda: successes(batch_id) == 2, 60, message="requeued image done")
    assert wait_batch(batch_id)["zip_path"]


def test_requeue_without_a_selection_is_refused():
    done = subprocess.run(
        [sys.executable, "-m", "cvunet_matting.commands.cli", "requeue"], capture_output=True, text=True
    )
    assert done.returncode == 1 and "--failed" in done.stderr


def test_requeue_of_a_batch_id_that_is_no_id_says_so_not_postgres():
    argv = [sys.executable, "-m", "cvunet_matting.commands.cli", "requeue", "--failed", "--batch", "nope"]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 2 and "'nope' is not a batch id" in done.stderr and "postgres" not in done.stderr
