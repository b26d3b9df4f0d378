"""A dead, frozen or cut-off worker's image back in seconds, with the production time limits and
visibility timeout (an hour; the suite shortens neither): recovery comes from the workers'
heartbeats, not from the timeout.

Every scenario ends with each input finished once: one row, one output file, one result.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from cvunet_matting import db
from cvunet_matting.config import load_settings
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.pipeline.submission import Item, submit_batch
from cvunet_matting.recovery import liveness, transport
from tests import support
from tests.support import png_bytes, rows_of, wait_batch

pytestmark = [pytest.mark.services, pytest.mark.stack, pytest.mark.model]
# The production model (the suite's default is a tiny stand-in); every time limit stays at its default.
PRODUCTION = {"CVUNET_MODEL": "isnet-fp16"}
RECOVERED_WITHIN_S = 60  # an hour without the heartbeats; a few seconds with them (make reliability measures it)


def photos(count: int) -> list[Item]:
    return [Item(f"photo{i}.png", png_bytes(200 + i, (256, 256))) for i in range(count)]


def started(batch_id: str) -> list[dict]:
    return [r for r in rows_of(batch_id) if r["state"] == "started"]


def assert_each_once(batch_id: str, count: int) -> list[dict]:
    rows = rows_of(batch_id)
    assert [r["state"] for r in rows] == ["success"] * count, [(r["filename"], r["state"], r["error"]) for r in rows]
    out_dir = load_settings().data_dir / os.path.dirname(rows[0]["output_path"])
    produced = sorted(p.name for p in out_dir.iterdir() if p.suffix == ".png")
    names = [f"photo{i}.png" for i in range(count)]
    assert produced == sorted(names + [f".{name}.raw.png" for name in names])  # each result and its raw matte
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM results")
        assert cur.fetchone()["n"] == count
    return rows


def hold_one(worker_factory, name: str, batch_id: str, **env):
    """A worker, and the id of the image it holds once it holds one."""
    proc = worker_factory(name, **PRODUCTION, **env)
    held = support.wait_until(lambda: started(batch_id), 120, message=f"{name} holds an image")
    return proc, str(held[0]["id"])


def test_the_suite_runs_with_the_production_time_limits():
    """What this file claims holds for the defaults only if nothing shortened them for the tests."""
    suite, defaults = load_settings(), load_settings({})
    assert (suite.task_hard_limit, suite.task_soft_limit) == (defaults.task_hard_limit, defaults.task_soft_limit)
    assert suite.visibility_timeout == defaults.visibility_timeout
    assert (suite.heartbeat_ttl, suite.heartbeat_interval) == (defaults.heartbeat_ttl, defaults.heartbeat_interval)


def test_a_dead_nodes_image_runs_again_at_once(clean_state, worker_factory, real_model_path):
    """The reported case: 4 photos, one worker killed with its whole process tree while it held one."""
    batch_id = submit_batch(photos(4), OutputOptions())
    first, victim = hold_one(worker_factory, "cpu0@%h", batch_id)
    support.kill_group(first)
    worker_factory("cpu1@%h", **PRODUCTION)
    wait_batch(batch_id, timeout=RECOVERED_WITHIN_S + 60)
    rows = {str(r["id"]): r for r in assert_each_once(batch_id, 4)}
    assert rows[victim]["attempts"] >= 2 and rows[victim]["worker"].startswith("cpu1@")


def test_a_slow_image_on_a_live_worker_is_never_taken_away(clean_state, worker_factory, real_model_path):
    """Held three heartbeat lifetimes, beside an idle worker that sweeps: it runs once, where it started."""
    batch_id = submit_batch(photos(1), OutputOptions())
    _, held = hold_one(worker_factory, "cpu0@%h", batch_id, CVUNET_TEST_DELAY_S="15")
    worker_factory("cpu1@%h", **PRODUCTION)
    wait_batch(batch_id, timeout=120)
    (row,) = assert_each_once(batch_id, 1)
    assert str(row["id"]) == held and row["attempts"] == 1 and row["worker"].startswith("cpu0@")


def test_a_frozen_worker_that_comes_back_finishes_nothing_twice(clean_state, worker_factory, real_model_path):
    batch_id = submit_batch(photos(3), OutputOptions())
    frozen, held = hold_one(worker_factory, "cpu0@%h", batch_id, CVUNET_TEST_DELAY_S="3")
    os.killpg(frozen.pid, signal.SIGSTOP)  # its heartbeat stops too: declared dead after the TTL
    try:
        worker_factory("cpu1@%h", **PRODUCTION)
        wait_batch(batch_id, timeout=RECOVERED_WITHIN_S + 60)
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)
    time.sleep(8)  # the thawed worker finishes its image: its result must be dropped
    rows = {str(r["id"]): r for r in assert_each_once(batch_id, 3)}
    assert rows[held]["attempts"] >= 2
    assert support.batch_row(batch_id)["state"] == "done"


def test_a_worker_cut_off_from_redis_is_replaced(clean_state, worker_factory, real_model_path):
    proxy = support.TcpProxy(6379)
    url = os.environ["CVUNET_REDIS_URL"].replace(":6379/", f":{proxy.port}/")
    batch_id = submit_batch(photos(3), OutputOptions())
    _, held = hold_one(worker_factory, "cpu0@%h", batch_id, CVUNET_REDIS_URL=url, CVUNET_TEST_DELAY_S="3")
    proxy.stop()  # the partition: its heartbeats, result and ack cannot reach Redis
    try:
        worker_factory("cpu1@%h", **PRODUCTION)
        support.wait_until(
            lambda: sum(r["state"] == "success" for r in rows_of(batch_id)) == 3,
            RECOVERED_WITHIN_S + 60,
            message="the other worker redid the cut-off worker's image",
        )
    finally:
        proxy = proxy.restart()
    wait_batch(batch_id, timeout=120)
    time.sleep(5)  # the reconnected worker's late result, if any, arrives now and must be dropped
    rows = {str(r["id"]): r for r in assert_each_once(batch_id, 3)}
    assert rows[held]["attempts"] >= 2
    proxy.stop()


def test_redis_restarted_without_its_data_is_reconciled_by_itself(clean_state, worker_factory, real_model_path):
    worker_factory("cpu0@%h", **PRODUCTION)
    batch_id = submit_batch(photos(5), OutputOptions())
    support.wait_until(lambda: started(batch_id), 120, message="an image in hand")
    support.redis().flushdb()  # what a restart without an append-only file leaves: nothing
    wait_batch(batch_id, timeout=RECOVERED_WITHIN_S + 120)  # no operator runs reconcile
    assert_each_once(batch_id, 5)


def test_storage_unwritable_for_a_while_is_ridden_out(clean_state, worker_factory, real_model_path):
    batch_id = submit_batch(photos(2), OutputOptions())
    out_dir = load_settings().data_dir / os.path.dirname(rows_of(batch_id)[0]["output_path"])
    aside = out_dir.with_name(out_dir.name + ".aside")
    out_dir.rename(aside)
    out_dir.write_bytes(b"")  # a file where the folder was: every write fails, as on a lost mount
    worker_factory("cpu0@%h", **PRODUCTION)
    # Past Celery's default of 3 retries (~20-30 s): the storage budget (300 s), not that count, decides.
    # Each attempt runs the real model before its write fails: on a loaded 2-core host (other test
    # processes beside it) five of them took over 180 s, so the wait is as long as the budget.
    support.wait_until(
        lambda: any(r["attempts"] >= 5 for r in rows_of(batch_id)), 300, message="a write failed and is retried 4 times"
    )
    assert not any(r["state"] == "failure" for r in rows_of(batch_id))
    out_dir.unlink()
    aside.rename(out_dir)
    wait_batch(batch_id, timeout=120)
    assert_each_once(batch_id, 2)


def test_abandoned_deliveries_are_those_of_dead_or_unknown_owners():
    delivered = (("1", "a", 100), ("2", "b", 100), ("3", "c", 109), ("4", "d", 109))
    found = [transport.Delivery(tag, task, at) for tag, task, at in delivered]
    owners = {"a": "alive", "b": "dead", "c": None, "d": "new"}
    picked = liveness.abandoned(found, owners, live={"alive"}, now=110.0, grace=5)
    # c and d were delivered a second ago: the owner may not be recorded, or not have beaten, yet
    assert [d.task_id for d in picked] == ["b"]
    picked = liveness.abandoned(found, owners, live={"alive"}, now=120.0, grace=5)
    assert [d.task_id for d in picked] == ["b", "c", "d"]


def test_the_sweep_reads_each_owners_own_beat(clean_state):
    """find_abandoned on a real Redis: an owner is alive while its heartbeat key exists, read by its
    name (no listing of every beat, which scans the whole keyspace every second)."""
    import json

    client = support.redis()
    old = time.time() - 60
    for tag, task_id, owner in (("t1", "task-1", "alive/1/a"), ("t2", "task-2", "dead/2/b"), ("t3", "task-3", None)):
        message = json.dumps([{"headers": {"id": task_id}, "body": ""}, "matting", "matting"])
        client.hset(transport.UNACKED, tag, message)
        client.zadd(transport.UNACKED_INDEX, {tag: old})
        if owner:
            client.set(liveness.OWNER + task_id, owner)
    liveness.beat(client, "alive/1/a", ["task-1"], ttl=30)
    picked = liveness.find_abandoned(client, grace=5)
    assert sorted(d.task_id for d in picked) == ["task-2", "task-3"]
    client.delete(liveness.BEAT + "alive/1/a")  # its beat gone: its message is abandoned too
    assert sorted(d.task_id for d in liveness.find_abandoned(client, grace=5)) == ["task-1", "task-2", "task-3"]


def test_a_finalizer_that_died_is_taken_over_by_reconcile(clean_state, worker_factory):
    from cvunet_matting.recovery.requeue import reconcile

    worker_factory("cpu0@%h")  # the tiny model: the finalizer is under test, not the matting
    batch_id = submit_batch(photos(3), OutputOptions())
    zip_path = load_settings().data_dir / wait_batch(batch_id)["zip_path"]
    zip_path.unlink()
    with db.transaction() as cur:  # as a finalizer killed for memory leaves it
        cur.execute(
            "UPDATE batches SET state = 'finalizing', zip_path = NULL, finished_at = NULL,"
            " finalizing_since = now() - interval '1 hour' WHERE id = %s",
            (batch_id,),
        )
    assert batch_id in reconcile(settle_s=0)["stalled_batches"]
    assert support.wait_until(lambda: support.batch_row(batch_id)["state"] == "done", 60, message="not finalized")
    assert zip_path.exists()


def test_a_task_seen_missing_once_is_not_republished_if_it_shows_up_a_moment_later(clean_state):
    """A message a worker is taking is off the queue and not yet in `unacked` for a moment: reconcile
    looks twice before it republishes, or the image would run twice (and count as a crash)."""
    import threading
    import uuid

    from cvunet_matting.db import writes
    from cvunet_matting.pipeline import dispatch
    from cvunet_matting.recovery.requeue import reconcile

    row = {"id": uuid.uuid4(), "filename": "a.png", "input_key": "k", "options": {}, "output_path": "o/a.png"}
    with db.transaction() as cur:
        writes.create_tasks(cur, [row])
        cur.execute("UPDATE tasks SET event_at = now() - interval '1 minute' WHERE id = %s", (row["id"],))
    arrives = threading.Timer(0.3, dispatch.publish_image, (row,))  # the message lands in between
    arrives.start()
    found = reconcile(settle_s=5, notify=lambda *_: None)
    arrives.join()
    assert found["lost"] == [] and support.redis().llen("matting") == 1
    support.redis().delete("matting")  # and one truly missing is republished, once
    assert [r["id"] for r in reconcile(settle_s=5, notify=lambda *_: None)["lost"]] == [row["id"]]
    assert support.redis().llen("matting") == 1


def test_a_message_in_a_reply_a_busy_worker_has_not_read_is_not_republished(clean_state):
    """A worker holding a countdown task keeps a BRPOP out for the slot that task lends it. When the
    task comes due it takes the slot back, and a message Redis hands to that BRPOP stays in the unread
    reply until the worker has room again: off the queue, not in `unacked`, for as long as a task runs
    (the storage retries' extra run, RELIABILITY.md). The worker's beat says so; reconcile waits."""
    import contextlib
    import socket
    import uuid
    from types import SimpleNamespace

    from kombu import Consumer

    from cvunet_matting.celery_app import app
    from cvunet_matting.db import writes
    from cvunet_matting.pipeline import dispatch
    from cvunet_matting.recovery.requeue import reconcile
    from cvunet_matting.worker.steps import LivenessStep

    rows = [
        {"id": uuid.uuid4(), "filename": f"{n}.png", "input_key": n, "options": {}, "output_path": f"o/{n}.png"}
        for n in "ab"
    ]
    with db.transaction() as cur:
        writes.create_tasks(cur, rows)
        cur.execute("UPDATE tasks SET event_at = now() - interval '1 minute'")
    received = []
    with app.connection_for_read() as conn:
        queue = app.amqp.queues[load_settings().queue]
        on_message = lambda body, message: received.append(message)  # noqa: E731
        consumer = Consumer(conn.default_channel, [queue], callbacks=[on_message], accept=["json"])
        consumer.qos(prefetch_count=1)
        consumer.consume()
        dispatch.publish_image(rows[0])
        conn.drain_events(timeout=5)  # the one slot taken
        consumer.qos(prefetch_count=2)  # a countdown task received lends one more: a BRPOP goes out
        with contextlib.suppress(socket.timeout):
            conn.drain_events(timeout=0.05)
        consumer.qos(prefetch_count=1)  # the countdown task comes due and takes it back
        dispatch.publish_image(rows[1])  # Redis hands it to the BRPOP in flight
        client = support.redis()
        assert str(rows[1]["id"]) not in transport.held_ids(client, load_settings().queue)
        client.set(liveness.LEADER, "another-worker", ex=60)  # this watchdog only beats
        worker_consumer = SimpleNamespace(hostname="busy@test", app=app, task_consumer=consumer)
        step = LivenessStep(worker_consumer)  # as the worker's consumer blueprint makes it and starts it
        step.start(worker_consumer)
        try:
            support.wait_until(lambda: liveness.live_workers(client), 10, message="no beat")
            found = reconcile(settle_s=5, notify=lambda *_: None)
        finally:
            step.shutdown(worker_consumer)
        received[0].ack()  # room again: the reply is read, and the second image was in it
        conn.drain_events(timeout=5)
        republished = transport.queued_ids(client, load_settings().queue)
        received[1].ack()
    assert [m.headers["id"] for m in received] == [str(r["id"]) for r in rows]
    assert found["lost"] == [] and not republished, "republished a message a live worker held in an unread reply"


def test_a_second_copy_of_a_message_is_not_counted_as_a_crash(clean_state, worker_factory):
    """Two copies of one task (a republish the watchdog made in error) both run and both end: no
    process died, so the poison-input cap, here 1, must not fail the image as 'crashed'."""
    from cvunet_matting.pipeline import dispatch
    from cvunet_matting.pipeline.submission import submit_image

    task_id = submit_image(Item("a.png", png_bytes(77, (64, 48))), OutputOptions())
    row = support.task_row(task_id)
    folder = load_settings().data_dir / os.path.dirname(row["output_path"])
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_bytes(b"")  # a file where its folder goes: every write fails and is retried
    dispatch.publish_image(row)  # the second copy
    worker_factory("cpu0@%h", CVUNET_MAX_ATTEMPTS="1")
    support.wait_until(lambda: support.task_row(task_id)["attempts"] >= 3, 60, message="both copies ran, retried")
    assert support.task_row(task_id)["state"] != "failure", support.task_row(task_id)["error"]
    folder.unlink()
    assert support.wait_task(task_id, timeout=120)["state"] == "success"
