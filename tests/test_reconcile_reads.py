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
