"""The Postgres mirror's spool: events wait in order while the database is down, then land."""

from __future__ import annotations

import psycopg2
import pytest

from cvunet_matting.celery_commands import parse_duration
from cvunet_matting.mirror import Mirror


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
