"""Reconcile's reads, made cheaper (it runs every 5 s in the leading watchdog): the ids of queued
messages found without parsing each whole message, and unfinished tasks read as ids, whole rows only
for those found lost. The same answers as before, on real kombu messages and a real database."""

from __future__ import annotations

import json
import uuid

import pytest

from cvunet_matting import db
from cvunet_matting.celery_app import app
from cvunet_matting.db import reads, writes
from cvunet_matting.pipeline.dispatch import MATTE_IMAGE
from cvunet_matting.recovery import transport
from tests import support

QUEUE = "reconcile-reads-test"  # no worker consumes it


@pytest.mark.services
def test_queued_ids_are_the_ids_the_messages_json_holds(clean_state):
    tricky = [
        {},
        {"output_path": f'"id": "{uuid.uuid4()}"'},  # the pattern inside an argument (escaped, in base64)
        {"options": {"id": str(uuid.uuid4())}, "owner": 3},
    ]
    sent = {app.send_task(MATTE_IMAGE, kwargs=kwargs, queue=QUEUE).id for kwargs in tricky}
    raws = support.redis().lrange(QUEUE, 0, -1)
    assert len(raws) == len(tricky)
    assert {json.loads(raw)["headers"]["id"] for raw in raws} == sent
    assert transport.queued_ids(support.redis(), QUEUE) == sent
    # A message of another shape, where the pattern occurs twice: read from its JSON.
    other = json.dumps({"headers": {"id": str(uuid.uuid4())}, "x": {"id": str(uuid.uuid4())}})
    assert transport.queued_id(other.encode()) == json.loads(other)["headers"]["id"]


@pytest.mark.services
def test_unfinished_ids_are_the_unfinished_rows_and_rows_are_read_for_the_lost_alone(clean_state):
    rows = [
        {"id": uuid.uuid4(), "filename": f"{i}.png", "input_key": f"k{i}", "options": {}, "output_path": f"{i}.png"}
        for i in range(3)
    ]
    with db.transaction() as cur:
        writes.create_tasks(cur, rows)
        cur.execute("UPDATE tasks SET event_at = now() - interval '1 minute'")
        cur.execute("UPDATE tasks SET state = 'success' WHERE id = %s", (rows[2]["id"],))
    with db.transaction() as cur:
        whole = reads.unfinished(cur, settle_s=2)
        ids = reads.unfinished_ids(cur, settle_s=2)
        lost = reads.unfinished(cur, settle_s=2, ids={str(rows[1]["id"]), str(rows[2]["id"])})
        none = reads.unfinished(cur, settle_s=2, ids=set())
    assert ids == {str(r["id"]) for r in whole} == {str(rows[0]["id"]), str(rows[1]["id"])}
    assert [r["id"] for r in lost] == [rows[1]["id"]]  # the finished one is not lost
    assert lost[0]["input_key"] == "k1" and none == []


def _dispatched_ago(batch_id, seconds: float) -> None:
    with db.transaction() as cur:
        cur.execute(
            "UPDATE chunks SET dispatched_at = now() - make_interval(secs => %s) WHERE batch_id = %s",
            (seconds, batch_id),
        )


def _quiet(*_) -> None:
    pass


@pytest.mark.services
def test_a_chunk_being_published_is_not_republished_until_its_grace_has_passed(clean_state):
    """Its dispatcher publishes it message by message (seconds for 200 images on a loaded host): its
    rows, pending since submission and not yet in Redis, are not lost. A dispatcher killed mid-publish
    never marks it published: past the grace, reconcile republishes its rows, once."""
    from cvunet_matting.recovery.requeue import reconcile

    batch_id, rows = support.claimed_chunk(3)
    assert reconcile(settle_s=5, notify=_quiet)["lost"] == []
    assert support.redis().llen("matting") == 0
    _dispatched_ago(batch_id, reads.DISPATCH_GRACE_S + 1)
    assert sorted(r["id"] for r in reconcile(settle_s=5, notify=_quiet)["lost"]) == sorted(r["id"] for r in rows)
    assert support.redis().llen("matting") == len(rows)
    assert reconcile(settle_s=5, notify=_quiet)["lost"] == []  # now in Redis: not again
    assert support.redis().llen("matting") == len(rows)


@pytest.mark.services
def test_a_published_chunk_is_compared_with_redis_at_once(clean_state):
    """Once its dispatcher has published it, no grace: what Redis loses then (a restart without its
    data) is republished within reconcile's settle, as before."""
    batch_id, rows = support.claimed_chunk(3)
    with db.transaction() as cur:
        before = reads.unfinished_ids(cur, settle_s=2)
        writes.chunk_published(cur, batch_id, 0)
    with db.transaction() as cur:
        after = reads.unfinished_ids(cur, settle_s=2)
        cur.execute("SELECT dispatched_at, published_at FROM chunks WHERE batch_id = %s", (batch_id,))
        chunk = cur.fetchone()
    assert before == set()
    assert after == {str(r["id"]) for r in rows}
    assert chunk["dispatched_at"] <= chunk["published_at"]


@pytest.mark.services
def test_a_chunk_being_dispatched_is_not_orphaned(clean_state):
    """A chunk with nothing left to run is completed by its dispatcher right after the claim: in between,
    reconcile must not restart it too (a second dispatcher for the batch). Published, or past the grace
    (its dispatcher died), a chunk whose rows all ended is orphaned as before."""
    batch_id, _ = support.claimed_chunk(3)
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET state = 'success' WHERE batch_id = %s", (batch_id,))
        cur.execute("UPDATE tasks SET event_at = now() - interval '1 minute' WHERE batch_id = %s", (batch_id,))
    expected = [{"batch_id": batch_id, "idx": 0}]
    with db.transaction() as cur:
        dispatching = reads.orphan_chunks(cur, settle_s=2)
    _dispatched_ago(batch_id, reads.DISPATCH_GRACE_S + 1)
    with db.transaction() as cur:
        abandoned = reads.orphan_chunks(cur, settle_s=2)
    _dispatched_ago(batch_id, 0)
    with db.transaction() as cur:
        writes.chunk_published(cur, batch_id, 0)
        published = reads.orphan_chunks(cur, settle_s=2)
    assert dispatching == []
    assert abandoned == expected
    assert published == expected


@pytest.mark.services
def test_a_dispatcher_marks_its_chunks_published_once_their_messages_are_in_redis(clean_state):
    """Submitted with no worker: the window's two chunks are claimed, published, then marked; the third
    waits, neither claimed nor published."""
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.pipeline.submission import Item, submit_batch

    items = [Item(f"{i}.png", support.png_bytes(300 + i)) for i in range(5)]
    batch_id = submit_batch(items, OutputOptions(), settings=support.settings(CVUNET_BATCH_CHUNK=2))
    with db.transaction() as cur:
        cur.execute(
            "SELECT idx, state, dispatched_at <= published_at AS in_order, published_at IS NULL AS unpublished"
            " FROM chunks WHERE batch_id = %s ORDER BY idx",
            (batch_id,),
        )
        chunks = [dict(row) for row in cur.fetchall()]
        unfinished = reads.unfinished_ids(cur, settle_s=0)
    assert chunks == [
        {"idx": 0, "state": "dispatched", "in_order": True, "unpublished": False},
        {"idx": 1, "state": "dispatched", "in_order": True, "unpublished": False},
        {"idx": 2, "state": "queued", "in_order": None, "unpublished": True},
    ]
    assert support.redis().llen("matting") == 4
    assert len(unfinished) == 4  # compared with Redis at once: all four are there


@pytest.mark.services
def test_requeue_of_stuck_work_leaves_a_chunk_on_its_way_to_its_dispatcher(clean_state):
    """`requeue --stuck-for` took pending rows by age alone: a chunk being published (or still
    waiting its turn in PostgreSQL) was published a second time, outside its chord. Now its rows are
    candidates only once reconcile would take them too: past the dispatch grace, unpublished."""
    batch_id, rows = support.claimed_chunk(3)
    waiting = [{**row, "id": uuid.uuid4(), "chunk": 1, "position": 3 + i} for i, row in enumerate(rows)]
    lone = {"id": uuid.uuid4(), "filename": "lone.png", "input_key": "kl", "options": {}, "output_path": "l.png"}
    with db.transaction() as cur:
        cur.execute("INSERT INTO chunks (batch_id, idx, state) VALUES (%s, 1, 'queued')", (batch_id,))
        writes.create_tasks(cur, [*waiting, lone])
        cur.execute("UPDATE tasks SET event_at = now() - interval '1 minute'")

    def stuck() -> set:
        with db.transaction() as cur:
            return {row["id"] for row in reads.requeue_candidates(cur, failed=False, stuck_seconds=30)}

    assert stuck() == {lone["id"]}
    _dispatched_ago(batch_id, reads.DISPATCH_GRACE_S + 1)  # its dispatcher died mid-publish
    assert stuck() == {lone["id"], *(row["id"] for row in rows)}
    with db.transaction() as cur:
        writes.chunk_published(cur, batch_id, 0)
        cur.execute("UPDATE chunks SET dispatched_at = now() WHERE batch_id = %s", (batch_id,))
    assert stuck() == {lone["id"], *(row["id"] for row in rows)}  # published: stuck by age alone
