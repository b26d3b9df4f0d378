"""Issue 30: the autoscaler's signal counts the work waiting AND in the workers' hands.

A Celery queue on Redis is a list; a message a worker has prefetched or is running has left it. KEDA's
Redis list scaler reads that list's length, 0 while every worker is busy, and would scale them down
mid-batch. `cvunet_queue_work` (web /metrics, recovery/backlog.py) adds what is delivered and
unacknowledged and what live workers' heartbeats say they hold.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from cvunet_matting import db
from cvunet_matting.config import load_settings
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.pipeline.submission import Item, submit_batch
from cvunet_matting.recovery import backlog, liveness
from tests import support
from tests.support import png_bytes, rows_of

pytestmark = [pytest.mark.services, pytest.mark.stack]
QUEUES = ("matting", "bookkeeping")


def photos(count: int, first: int = 0) -> list[Item]:
    return [Item(f"photo{i}.png", png_bytes(300 + i, (64, 64))) for i in range(first, first + count)]


def scraped(app, admin, name: str, **labels: str) -> float | None:
    """A sample of the web app's /metrics, read as Prometheus would (an admin's key)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = app.test_client().get("/metrics", headers=admin.bearer).get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_the_queues_are_the_settings(clean_state):
    settings = load_settings()
    assert (settings.queue, settings.bookkeeping_queue) == QUEUES


def test_prefetched_and_running_images_count_where_the_list_reads_zero(app, worker_factory):
    """4 images, one worker with concurrency 1 and prefetch multiplier 4: one runs (held 60 s each by
    the fault hook), three wait in the worker. The list is empty; the signal says 4."""
    admin = support.make_user(admin=True, prefix="scaler")
    batch_id = submit_batch(photos(4), OutputOptions())
    client = support.redis()
    # Before any worker: all four wait in the list, and both readings agree.
    assert client.llen("matting") == 4
    assert scraped(app, admin, "cvunet_queue_work", queue="matting") == 4

    worker_factory("cpu0@%h", args=("--prefetch-multiplier", "4"), CVUNET_TEST_DELAY_S="60")
    support.wait_until(
        lambda: [r for r in rows_of(batch_id) if r["state"] == "started"], 120, message="the worker runs an image"
    )
    work = support.wait_until(
        lambda: (w := backlog.queue_work(client, QUEUES)["matting"]).delivered == 4 and w,
        60,
        message="the worker has taken all four messages",
    )
    rows = rows_of(batch_id)
    assert client.llen("matting") == 0  # what KEDA's Redis list scaler would read
    assert (work.ready, work.delivered, work.total) == (0, 4, 4)
    assert [r["state"] for r in rows].count("started") == 1  # one running, three prefetched
    assert all(r["state"] in {"started", "queued", "pending"} for r in rows), [r["state"] for r in rows]
    assert scraped(app, admin, "cvunet_queue_work", queue="matting") == 4
    assert scraped(app, admin, "cvunet_queue_messages", queue="matting", state="delivered") == 4
    assert scraped(app, admin, "cvunet_queue_length") == 0
    # The worker's heartbeat names its queues and the four it holds: the same work, counted once.
    beat = support.wait_until(
        lambda: next((b for b in liveness.beats(client).values() if len(b["held"]) == 4), None),
        30,
        message="the worker's heartbeat lists what it holds",
    )
    assert beat["queues"] == ["bookkeeping", "matting"]
    assert backlog.queue_work(client, QUEUES)["matting"].total == 4


def test_work_only_a_heartbeat_knows_of_counts_once(clean_state):
    """A message off the list and not yet in `unacked` (a BRPOP reply a worker cannot read yet), and an id
    a live worker holds that Redis has nowhere else, count for that worker's queue; what Redis has counts
    once, however many say they hold it."""
    client = support.redis()
    body = {"headers": {"id": "queued-1"}}
    client.lpush("matting", json.dumps(body))
    liveness.beat(client, "gpu0@a/1/x", ["queued-1", "only-held"], ttl=30, receiving=True, queues=["matting"])
    liveness.beat(client, "books@a/2/y", ["only-books"], ttl=30, queues=["bookkeeping"])
    liveness.beat(client, "both@a/3/z", ["unknown-queue"], ttl=30, queues=["bookkeeping", "matting"])
    work = backlog.queue_work(client, QUEUES)
    assert work["matting"] == backlog.Work(ready=1, delivered=0, held=2)  # only-held, and the unread reply
    assert work["bookkeeping"] == backlog.Work(ready=0, delivered=0, held=1)


def test_delivered_messages_are_counted_by_their_queue(clean_state):
    """kombu's `unacked` entries are [message, exchange, routing key]: each goes to its own queue."""
    client = support.redis()
    for tag, (task_id, queue) in enumerate([("a", "matting"), ("b", "matting"), ("c", "bookkeeping")]):
        client.hset("unacked", f"tag{tag}", json.dumps([{"headers": {"id": task_id}}, queue, queue]))
    client.hset("unacked", "other", json.dumps([{"headers": {"id": "d"}}, "elsewhere", "elsewhere"]))
    client.hset("unacked", "garbled", b"not json")
    work = backlog.queue_work(client, QUEUES)
    assert (work["matting"].delivered, work["bookkeeping"].delivered) == (2, 1)
    assert work["matting"].total == 2


def prestop_command() -> str:
    """The GPU workers' preStop hook, as the gpu overlay renders it (deploy/kubernetes/base/worker.yaml)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("k8s_check", support.REPO / "deploy" / "kubernetes" / "k8s_check.py")
    assert spec is not None and spec.loader is not None
    checker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checker)
    worker = checker.find(checker.render(checker.OVERLAYS[1]), "Deployment", "worker")
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    shell, flag, script = container["lifecycle"]["preStop"]["exec"]["command"]
    assert (shell, flag) == ("sh", "-c")
    return script


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the manifest (`make machine`)")
def test_a_scaled_down_worker_drains_without_losing_or_repeating_an_image(clean_state, worker_factory):
    """The pod's preStop (cancel_consumer to its node name), then SIGTERM (Celery's warm shutdown): it takes
    nothing new, what it holds is finished or handed back, and another worker does the rest, each image once."""
    batch_id = submit_batch(photos(4), OutputOptions())
    draining = worker_factory("cpu0@%h", args=("--prefetch-multiplier", "4"), CVUNET_TEST_DELAY_S="3")
    client = support.redis()
    support.wait_until(
        lambda: backlog.queue_work(client, QUEUES)["matting"].delivered == 4, 60, message="it holds all four"
    )
    # As in the pod: celery on the PATH, the pod's name as its hostname (the worker's %h).
    path = f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "CVUNET_QUEUE": "matting", "HOSTNAME": socket.gethostname()}
    hook = subprocess.run(["sh", "-c", prestop_command()], env=env, cwd=support.REPO, capture_output=True, text=True)
    assert "no longer consuming from matting" in hook.stdout + hook.stderr, hook.stdout + hook.stderr

    late = submit_batch(photos(1, first=4), OutputOptions())  # after the hook: this worker must not take it
    support.wait_until(
        lambda: [r for r in rows_of(batch_id) if r["state"] == "success"], 120, message="the worker finishes one"
    )
    assert client.llen("matting") == 1 and [r["state"] for r in rows_of(late)] != ["success"]
    draining.send_signal(signal.SIGTERM)
    draining.wait(timeout=300)

    worker_factory("cpu1@%h")
    support.wait_batch(batch_id, timeout=300)
    support.wait_batch(late, timeout=300)
    rows = rows_of(batch_id) + rows_of(late)
    assert [r["state"] for r in rows] == ["success"] * 5, [(r["state"], r["error"]) for r in rows]
    assert [r["attempts"] for r in rows] == [1] * 5  # none ran twice
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM results")
        assert cur.fetchone()["n"] == 5
