"""Retry-After hints: the pure estimate, its cache, and the API answering from real Postgres rows."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from cvunet_matting import db
from cvunet_matting.web import create_app
from cvunet_matting.webapp.polling import MAX_S, MIN_S, UNKNOWN_S, Pace, PaceCache, header, poll_after
from tests import support
from tests.support import png_bytes


@pytest.mark.parametrize(
    ("state", "ahead", "running_for", "pace", "expected"),
    [
        ("pending", 500, 0.0, None, UNKNOWN_S),  # no history yet: poll every second
        ("pending", 0, 0.0, Pace(1, 2.0), 1.0),  # next in line: 2 s left, halved
        ("pending", 0, 0.0, Pace(1, 0.04), MIN_S),  # a GPU's 40 ms: as often as MIN_S, not once a second
        ("pending", 1, 0.0, Pace(1, 0.3), 0.3),  # one ahead on a 300 ms device: 0.6 s left, halved
        ("pending", 3, 0.0, Pace(2, 4.0), 5),  # (3 / 2 + 1) * 4 s = 10 s left: come back after 5
        ("pending", 3, 0.0, Pace(1, 4.0), 8),  # one worker: twice the queue time
        ("retry", 1000, 0.0, Pace(1, 2.0), MAX_S),  # a long queue is capped: never more than 10 s late
        ("started", 0, 1.0, Pace(1, 9.0), 4),  # 8 s of its run left
        ("started", 0, 30.0, Pace(1, 9.0), 7.5),  # far slower than usual: back off with its running time
        ("started", 0, 10.0, Pace(1, 0.4), 2.5),  # a 0.4 s pace, 10 s in: not 20 polls a second
    ],
)
def test_poll_after_is_half_the_expected_wait(state, ahead, running_for, pace, expected):
    assert poll_after(state, ahead, running_for, pace) == pytest.approx(expected)


@pytest.mark.parametrize(("seconds", "expected"), [(0.05, "0"), (0.49, "0"), (0.5, "1"), (1.0, "1"), (4.4, "4")])
def test_retry_after_is_the_hint_in_whole_seconds_zero_for_work_that_ends_soon(seconds, expected):
    assert header(seconds) == expected


class FakeCursor:
    """Answers recent_pace's query and counts how often it was asked."""

    def __init__(self, workers, seconds):
        self.row, self.queries = {"workers": workers, "seconds": seconds}, 0

    def execute(self, sql, params=None):
        self.queries += 1

    def fetchone(self):
        return self.row


def test_pace_is_read_at_most_once_per_ttl():
    now = [100.0]
    cache, cur = PaceCache(ttl=5.0, clock=lambda: now[0]), FakeCursor(2, 3.5)
    assert cache.get(cur) == Pace(2, 3.5)
    now[0] += 4.9
    cur.row = {"workers": 3, "seconds": 1.0}
    assert cache.get(cur) == Pace(2, 3.5) and cur.queries == 1
    now[0] += 0.2
    assert cache.get(cur) == Pace(3, 1.0) and cur.queries == 2


def test_no_finished_task_means_no_pace():
    assert PaceCache().get(FakeCursor(0, None)) is None


def insert_task(cur, state: str, created: datetime, **fields) -> str:
    task_id = str(uuid.uuid4())
    row = {
        "id": task_id,
        "filename": "x.png",
        "input_key": "k",
        "options": json.dumps({}),
        "output_path": f"out/{task_id}.png",
        "state": state,
        "created_at": created,
        **fields,
    }
    cur.execute(
        f"INSERT INTO tasks ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",  # noqa: S608 (our own column names)
        list(row.values()),
    )
    return task_id


def test_a_task_deep_in_the_queue_is_told_to_poll_less_often(clean_state):
    """History: one worker took 4 s per image. 20 images wait ahead: about 84 s, so the hint is 10 s."""
    start = datetime.now(UTC) - timedelta(minutes=10)
    with db.transaction() as cur:
        for i in range(5):
            began = start + timedelta(seconds=4 * i)
            fields = {"worker": "cpu0@h", "started_at": began, "finished_at": began + timedelta(seconds=4)}
            insert_task(cur, "success", began, **fields)
        waiting = [insert_task(cur, "pending", start + timedelta(minutes=1, seconds=i)) for i in range(21)]
        running = insert_task(cur, "started", start, started_at=datetime.now(UTC) - timedelta(seconds=1))
    # Rows inserted here have no owner (the operator's): an admin sees them.
    client = support.user_client(create_app({"TESTING": True}), support.make_user(admin=True), signed_in=False)
    first, last = (client.get(f"/api/v1/tasks/{tid}") for tid in (waiting[0], waiting[-1]))
    assert first.headers["Retry-After"] == "2"  # next in line: (0 + 1) * 4 s, halved
    assert first.get_json()["poll_after_s"] == 2.0
    assert last.headers["Retry-After"] == str(int(MAX_S)) and last.get_json()["poll_after_s"] == MAX_S
    assert 0 < client.get(f"/api/v1/tasks/{running}").get_json()["poll_after_s"] <= 1.5  # under 3 s left, halved


def test_a_new_task_with_no_history_is_polled_every_second(clean_state):
    client = support.user_client(create_app({"TESTING": True}), support.make_user(), signed_in=False)
    body = {"file": (io.BytesIO(png_bytes(5)), "a.png")}
    submitted = client.post("/api/v1/images", data=body, content_type="multipart/form-data")
    assert submitted.status_code == 202 and submitted.get_json()["poll_after_s"] == UNKNOWN_S
    assert submitted.get_json()["wait_url"] == submitted.get_json()["status_url"] + "?wait=30"
    assert client.get(submitted.get_json()["status_url"]).headers["Retry-After"] == "1"
