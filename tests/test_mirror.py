"""The Postgres mirror's spool: events wait in order while the database is down, then land."""

from __future__ import annotations

import psycopg2
import pytest

from cvunet_matting.commands.operator import parse_duration
from cvunet_matting.pipeline.mirror import Mirror


class FlakyDatabase:
    """Stands in for the writer only: records what it was given while up, raises while down."""

    def __init__(self):
        self.up = True
        self.applied: list[dict] = []

    def write(self, events: list[dict]) -> None:
        if not self.up:
            raise psycopg2.OperationalError("connection refused")
        self.applied.extend(events)


def test_events_spool_while_down_and_replay_in_order(tmp_path):
    database = FlakyDatabase()
    mirror = Mirror(tmp_path / "spool", database.write)
    mirror.record({"task_id": "a", "state": "started"})
    database.up = False
    mirror.record({"task_id": "a", "state": "success"})
    mirror.record({"task_id": "b", "state": "started"})
    assert [e["state"] for e in database.applied] == ["started"]
    assert len(mirror.pending()) == 1
    database.up = True
    mirror.record({"task_id": "b", "state": "failure"})  # the spool goes first: order is kept
    assert [(e["task_id"], e["state"]) for e in database.applied] == [
        ("a", "started"),
        ("a", "success"),
        ("b", "started"),
        ("b", "failure"),
    ]
    assert mirror.pending() == []


def test_another_process_replays_a_dead_process_spool(tmp_path):
    database = FlakyDatabase()
    database.up = False
    Mirror(tmp_path, database.write).record({"task_id": "x", "state": "success"})
    database.up = True
    survivor = Mirror(tmp_path, database.write)
    survivor.own_file = tmp_path / "other-host-1.jsonl"
    assert survivor.flush() is True
    assert [e["task_id"] for e in database.applied] == ["x"] and survivor.pending() == []


def test_every_event_gets_a_timestamp(tmp_path):
    database = FlakyDatabase()
    Mirror(tmp_path, database.write).record({"task_id": "t", "state": "started"})
    assert database.applied[0]["at"].endswith("+00:00")


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m15", "1.5h", "-3m", "15 minutes"])
def test_parse_duration_refuses_nonsense(text):
    import click

    with pytest.raises(click.BadParameter):
        parse_duration(text)


def later(seconds: float) -> str:
    """An event time after the row's creation (events older than the row's last one are ignored)."""
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def task_row(task_id) -> dict:
    from cvunet_matting import db

    with db.transaction() as cur:
        cur.execute("SELECT state, attempts, error, width FROM tasks WHERE id = %s", (task_id,))
        return cur.fetchone()


@pytest.fixture
def pending_task(clean_state):
    import uuid

    from cvunet_matting import db
    from cvunet_matting.db import writes

    task_id = str(uuid.uuid4())
    row = {"id": task_id, "filename": "a.jpg", "input_key": "0" * 64, "options": {}, "output_path": "outputs/a.png"}
    with db.transaction() as cur:
        writes.create_tasks(cur, [row])
    return task_id


def test_the_real_writer_applies_events_in_one_query_in_order(pending_task):
    from cvunet_matting import db
    from cvunet_matting.db import writes

    events = [
        {"task_id": pending_task, "state": "started", "attempts": 1, "at": later(1)},
        {"task_id": pending_task, "state": "success", "width": 7, "at": later(3)},
        # Older than the success already applied: ignored, as a late replay from a spool would be.
        {"task_id": pending_task, "state": "started", "attempts": 2, "at": later(2)},
    ]
    with db.autocommit() as cur:
        writes.apply_events(cur, events)
        sent = cur.query.decode()
    assert sent.count("UPDATE tasks") == 3 and "synchronous_commit" not in sent  # a result waits for the disk
    assert task_row(pending_task) == {"state": "success", "attempts": 1, "error": None, "width": 7}


def test_a_start_alone_does_not_wait_for_the_disk(pending_task):
    from cvunet_matting import db
    from cvunet_matting.db import writes

    with db.autocommit() as cur:
        writes.apply_events(cur, [{"task_id": pending_task, "state": "started", "attempts": 1, "at": later(1)}])
        assert cur.query.decode().startswith("SET LOCAL synchronous_commit TO OFF")
        cur.execute("SHOW synchronous_commit")  # and only that one transaction did not
        assert cur.fetchone()["synchronous_commit"] == "on"
    assert task_row(pending_task)["state"] == "started"


def test_a_background_event_lands_before_a_later_one(tmp_path):
    import threading

    gate = threading.Event()
    database = FlakyDatabase()
    slow_write = database.write

    def write(events):
        gate.wait(5)  # the database is slow to take the background event
        slow_write(events)

    mirror = Mirror(tmp_path, write)
    mirror.record_later({"task_id": "t", "state": "started"})
    assert database.applied == []  # the caller did not wait for it
    threading.Timer(0.2, gate.set).start()
    mirror.record({"task_id": "t", "state": "success"})
    assert [e["state"] for e in database.applied] == ["started", "success"]


def test_a_background_event_spools_while_the_database_is_down(tmp_path):
    database = FlakyDatabase()
    database.up = False
    mirror = Mirror(tmp_path, database.write)
    mirror.record_later({"task_id": "t", "state": "started"})
    mirror._last_later.result(timeout=5)
    assert len(mirror.pending()) == 1 and database.applied == []
    database.up = True
    mirror.record({"task_id": "t", "state": "success"})
    assert [e["state"] for e in database.applied] == ["started", "success"]


def test_a_start_and_the_result_lookup_go_in_one_round_trip(pending_task, tmp_path):
    """The run's start is written and the result looked up in one query (worker/image_job.py): the
    start lands (not waiting for the disk), and the lookup's row comes back."""
    from cvunet_matting import db
    from cvunet_matting.db import reads, writes

    with db.transaction() as cur:
        writes.register_result(cur, pending_task, "key-1", "v1", "outputs/a.png", (5, 6), 0.5)
    start = {"task_id": pending_task, "state": "started", "attempts": 2, "worker": "w@h", "at": later(1)}
    with db.autocommit() as cur:
        found = writes.apply_events(cur, [start], then=reads.result_query("key-1"))
        sent = cur.query.decode()
    assert sent.startswith("SET LOCAL synchronous_commit TO OFF") and sent.count(";") == 2
    assert found["output_path"] == "outputs/a.png" and found["width"] == 5
    assert task_row(pending_task)["state"] == "started" and task_row(pending_task)["attempts"] == 2
    # Through the mirror, with nothing spooled: the same, and no result is None.
    mirror = Mirror(tmp_path)
    again = {"task_id": pending_task, "state": "started", "attempts": 3, "at": later(2)}
    assert mirror.record_then_read(again, reads.result_query("no-such-key")) is None
    assert task_row(pending_task)["attempts"] == 3


def test_a_success_and_still_wanted_go_in_one_round_trip(pending_task):
    """A success's end and "does its row still want the file?" in one query (tasks.finish_run): on a
    kept row the end lands and the answer is yes; on a row deleted meanwhile nothing lands, no result
    is registered for reuse, and the answer is no."""
    import uuid

    from cvunet_matting import db
    from cvunet_matting.db import reads, writes
    from cvunet_matting.worker import signals

    result = {"idem_key": "key-2", "output_path": "outputs/a.png", "width": 7, "height": 8, "confidence": 0.5}
    success = {"task_id": pending_task, "state": "success", "attempts": 1, "reused": False, **result}
    with db.autocommit() as cur:
        end = {**signals.end_event(success), "at": later(1)}
        found = writes.apply_events(cur, [end], then=reads.wanted_query(pending_task))
        assert cur.query.decode().count(";") == 2  # the update, the result's insert, then the read
    assert found == {"wanted": True} and task_row(pending_task)["width"] == 7
    deleted = uuid.uuid4()
    with db.transaction() as cur:
        writes.create_tasks(
            cur,
            [
                {
                    "id": deleted,
                    "filename": "b.jpg",
                    "input_key": "1" * 64,
                    "options": {},
                    "output_path": "outputs/b.png",
                }
            ],
        )
        writes.delete_tasks(cur, [deleted])
    before = task_row(deleted)
    assert signals.mirror_end_if_wanted({**success, "task_id": str(deleted), "idem_key": "key-3"}) is False
    assert task_row(deleted) == before
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM results WHERE task_id = %s", (str(deleted),))
        assert cur.fetchone()["n"] == 0
    assert signals.mirror_end_if_wanted({**success, "task_id": str(uuid.uuid4()), "idem_key": "key-4"}) is False


def test_a_start_spools_and_the_lookup_runs_alone_while_events_wait(tmp_path):
    """Events already spooled go first: a start that cannot follow them now is spooled behind them,
    and the lookup runs on its own; with the database away, the lookup's error reaches the caller."""
    database = FlakyDatabase()
    reads_sent: list = []

    def read(query):
        if not database.up:
            raise psycopg2.OperationalError("connection refused")
        reads_sent.append(query)
        return {"idem_key": query[1][0]}

    def write_then_read(events, query):
        database.write(events)
        return read(query)

    mirror = Mirror(tmp_path, database.write, write_then_read, read)
    database.up = False
    mirror.record({"task_id": "a", "state": "success"})  # spooled
    with pytest.raises(psycopg2.OperationalError):
        mirror.record_then_read({"task_id": "b", "state": "started"}, ("SELECT", ("k",)))
    assert len(mirror.pending()) == 1 and database.applied == []
    database.up = True
    assert mirror.record_then_read({"task_id": "c", "state": "started"}, ("SELECT", ("k2",))) == {"idem_key": "k2"}
    assert [(e["task_id"], e["state"]) for e in database.applied] == [
        ("a", "success"),
        ("b", "started"),
        ("c", "started"),
    ]
    assert mirror.pending() == []


def test_the_caller_is_told_whether_its_event_was_committed_or_spooled(tmp_path):
    """A success committed before its task returns is announced by Celery's own message alone
    (signals.on_success): only when it was written, not spooled."""
    database = FlakyDatabase()

    def write_then_read(events, query):
        database.write(events)
        return {"wanted": True}

    mirror = Mirror(tmp_path, database.write, write_then_read, lambda query: {"wanted": True})
    assert mirror.record_then_read_told({"task_id": "a", "state": "success"}, ("SELECT", ())) == (
        True,
        {"wanted": True},
    )
    database.up = False
    assert mirror.record_then_read_told({"task_id": "b", "state": "success"}, ("SELECT", ())) == (
        False,
        {"wanted": True},
    )
    assert len(mirror.pending()) == 1


def test_a_late_start_never_turns_a_finished_row_back(pending_task):
    """A second run can pass "finished already?" between the first run's end event and its result
    reaching Redis; its start, timed after that end, must not make the finished image "started" again
    (the row stayed so for good, reconcile republished it every 5 s and its batch never finished)."""
    import uuid

    from cvunet_matting import db
    from cvunet_matting.db import writes

    with db.autocommit() as cur:
        writes.apply_events(cur, [{"task_id": pending_task, "state": "success", "width": 7, "at": later(1)}])
        writes.apply_events(cur, [{"task_id": pending_task, "state": "started", "attempts": 2, "at": later(2)}])
    assert task_row(pending_task) == {"state": "success", "attempts": 0, "error": None, "width": 7}
    with db.transaction() as cur:  # run again on purpose: set pending first, then its start lands
        writes.reset_for_requeue(cur, [uuid.UUID(pending_task)])
    with db.autocommit() as cur:
        writes.apply_events(cur, [{"task_id": pending_task, "state": "started", "attempts": 3, "at": later(4)}])
    assert task_row(pending_task)["state"] == "started"


def test_an_end_written_after_a_second_copys_start_still_lands(pending_task):
    """The end of the run that finished the task goes out in the background; a second copy's start, timed
    a moment after that end, can reach PostgreSQL first. The older end must still land (it did not: the
    row stayed `started`, reconcile republished it every 5 s and its chord never completed)."""
    from datetime import datetime

    from cvunet_matting import db
    from cvunet_matting.db import writes

    second_start = later(3)
    with db.autocommit() as cur:
        writes.apply_events(cur, [{"task_id": pending_task, "state": "started", "attempts": 1, "at": later(1)}])
        writes.apply_events(cur, [{"task_id": pending_task, "state": "started", "attempts": 2, "at": second_start}])
        writes.apply_events(cur, [{"task_id": pending_task, "state": "success", "width": 7, "at": later(2)}])
        cur.execute("SELECT event_at FROM tasks WHERE id = %s", (pending_task,))
        event_at = cur.fetchone()["event_at"]
    assert task_row(pending_task) == {"state": "success", "attempts": 2, "error": None, "width": 7}
    assert event_at == datetime.fromisoformat(second_start)  # the row's clock never goes back


def test_a_late_end_still_does_not_land_on_a_row_set_pending_again(pending_task):
    """A requeue sets the row pending (now): an end older than that, replayed late from a spool, stays out."""
    import uuid

    from cvunet_matting import db
    from cvunet_matting.db import writes

    with db.autocommit() as cur:
        writes.apply_events(cur, [{"task_id": pending_task, "state": "started", "attempts": 1, "at": later(-5)}])
    with db.transaction() as cur:
        writes.reset_for_requeue(cur, [uuid.UUID(pending_task)])
    with db.autocommit() as cur:
        writes.apply_events(cur, [{"task_id": pending_task, "state": "failure", "error": "old", "at": later(-4)}])
    assert task_row(pending_task)["state"] == "pending"
