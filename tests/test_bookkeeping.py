"""The bookkeeping queue: images only on the model workers' queue; chunk callbacks, finalize and
folder listing on a light CPU worker that `cvunet-matting worker` starts beside them."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from cvunet_matting.celery_app import app
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.pipeline import dispatch
from cvunet_matting.pipeline.submission import Item, submit_batch
from cvunet_matting.worker.supervisor import bookkeeper, command, concurrency
from tests import support
from tests.support import png_bytes, wait_batch


def queue_of(task_name: str) -> str:
    return app.amqp.router.route({}, task_name)["queue"].name


def test_images_go_to_the_model_queue_and_bookkeeping_to_its_own():
    assert queue_of(dispatch.MATTE_IMAGE) == "matting"
    assert {queue_of(name) for name in dispatch.BOOKKEEPING_TASKS} == {"bookkeeping"}


@pytest.mark.services
def test_each_message_lands_on_its_own_queue_only(clean_state):
    """Bound to one exchange and key, both queues would get a copy of every message (as they once did)."""
    client = support.redis()
    with app.connection_for_write() as conn:  # as a worker consuming both queues declares them
        for queue in app.amqp.queues.values():
            queue(conn.default_channel).declare()
    row = {"id": uuid.uuid4(), "input_key": "k", "options": {}, "output_path": "o.png"}
    dispatch.publish_image(row)
    # A retry (and a restored delivery) is published to the exchange and key it was delivered with.
    dispatch.image_signature(row).apply_async(exchange="matting", routing_key="matting")
    dispatch.finalize_batch(str(uuid.uuid4())).apply_async()
    dispatch.publish_listing(str(uuid.uuid4()))
    assert (client.llen("matting"), client.llen("bookkeeping")) == (2, 2)


def test_the_bookkeeper_loads_no_model_and_takes_two_tasks_at_once():
    spec = bookkeeper()
    argv = command(spec, "bookkeeping", "INFO")
    assert argv[argv.index("-Q") + 1] == "bookkeeping"
    assert spec.env["CVUNET_WORKER_ROLE"] == "bookkeeping" and spec.env["CUDA_VISIBLE_DEVICES"] == ""
    assert concurrency(spec) == 2  # a long ZIP must not hold back another batch's next chunk


@pytest.mark.services
@pytest.mark.stack
def test_worker_command_runs_the_bookkeeper_and_a_batch_finishes_through_it(clean_state, tmp_root):
    log = open(tmp_root / "worker-cli.log", "wb")  # noqa: SIM115 (closed after the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cvunet_matting.commands.cli", "worker", "--cpu", "1"],
        cwd=support.REPO,
        env={**os.environ, "CVUNET_DEVICE": "cpu"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        support.wait_until(lambda: set(_queues_by_worker()) == {"cpu0", "books"}, 90, message="workers up")
        assert _queues_by_worker() == {"cpu0": ["matting"], "books": ["bookkeeping"]}
        items = [Item(f"p{i}.png", png_bytes(10 + i, (64, 48))) for i in range(3)]
        batch = wait_batch(submit_batch(items, OutputOptions()), timeout=120)
        assert batch["state"] == "done" and batch["zip_path"]
        ran = _tasks_run_by_worker()
        assert set(ran["cpu0"]) == {dispatch.MATTE_IMAGE}
        assert dispatch.FINALIZE_BATCH in ran["books"] and dispatch.MATTE_IMAGE not in ran["books"]
    finally:
        support.kill_group(proc)
        log.close()


def _queues_by_worker() -> dict[str, list[str]]:
    replies = app.control.inspect(timeout=1).active_queues() or {}
    return {node.split("@")[0]: sorted(q["name"] for q in queues) for node, queues in replies.items()}


def _tasks_run_by_worker() -> dict[str, dict]:
    replies = app.control.inspect(timeout=1).stats() or {}
    return {node.split("@")[0]: stats.get("total", {}) for node, stats in replies.items()}
