"""?wait= and event streams: answered when the worker finishes (woken through Redis pub/sub), held no
longer than asked, refused with 429 beyond the process's wait slots."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime

import pytest

from cvunet_matting.pipeline.notify import DONE_PREFIX, ids_in, publish_done
from cvunet_matting.web import create_app
from cvunet_matting.webapp.waiting import Hub, Watch, changes, hold
from tests import support
from tests.support import png_bytes

SLOW_MS = 1500  # the simulated device's run: long beside the time the web tier takes to answer


@pytest.fixture
def user(database):
    return support.make_user(prefix="waiter")


def make_client(app, user):
    return support.user_client(app, user)


def upload(client, data: bytes, query: str = ""):
    body = {"file": (io.BytesIO(data), "photo.png")}
    return client.post(f"/api/v1/images{query}", data=body, content_type="multipart/form-data")


@pytest.fixture
def slow_worker(worker_factory, tmp_root):
    """A worker whose model run is a SLOW_MS sleep (tests/support/device.py)."""
    model = support.build_isnet_shaped_model(tmp_root / "models" / "sim-isnet-64.onnx", size=64)
    env = support.simulated_device_env(tmp_root / "sim", SLOW_MS)
    return worker_factory("slow@%h", CVUNET_MODEL=str(model), **env)


# ------------------------------------------------------------------ the parts, without services


def test_messages_name_their_task_and_batch_and_say_whether_it_ended():
    meta = {"status": "SUCCESS", "result": {"task_id": "t1", "batch_id": "b1"}, "task_id": "t1"}
    assert ids_in("celery-task-meta-t1", json.dumps(meta)) == ({"t1", "b1"}, True)
    assert ids_in("celery-task-meta-t2", json.dumps({"status": "STARTED", "result": {"pid": 1}})) == ({"t2"}, False)
    assert ids_in(DONE_PREFIX + "t3", json.dumps({"task_id": "t3", "batch_id": None})) == ({"t3"}, True)
    assert ids_in("celery-task-meta-t4", b"not json") == ({"t4"}, False)


def test_a_watch_is_woken_by_a_message_naming_its_id_and_slots_are_bounded():
    hub = Hub("redis://127.0.0.1:1/0", slots=1)
    hub._start = lambda: None  # no subscriber thread: messages are dispatched by hand
    with hub.watch("a", "b") as watch:
        assert isinstance(watch, Watch) and hub.held == 1
        with pytest.raises(Exception, match="already waiting") as refused, hub.watch("c"):
            pass
        assert refused.value.code == 429 and refused.value.retry_after == 1
        hub.dispatch("celery-task-meta-zzz", b"{}")
        assert not watch.event.is_set()
        hub.dispatch("celery-task-meta-b", json.dumps({"status": "SUCCESS"}))
        assert watch.wait(0) is True  # woken, by an end
        assert watch.wait(0) is False  # and cleared again
    assert hub.held == 0


def test_changes_yield_each_new_value_until_final_and_stop_at_the_bound():
    hub = Hub("redis://127.0.0.1:1/0", slots=2)
    hub._start = lambda: None
    values = iter([{"s": "pending"}, {"s": "started"}, {"s": "success"}])
    current = {"v": next(values)}

    def wake():
        for _ in range(2):
            time.sleep(0.05)
            current["v"] = next(values)
            hub.dispatch("celery-task-meta-x", json.dumps({"status": "SUCCESS"}))

    threading.Thread(target=wake, daemon=True).start()
    seen = [v["s"] for v in changes(hub, ("x",), lambda: current["v"], lambda v: v["s"] == "success", 10)]
    assert seen == ["pending", "started", "success"]
    started = time.monotonic()
    stuck = list(changes(hub, ("y",), lambda: {"s": "pending"}, lambda v: False, 0.2))
    assert stuck == [{"s": "pending"}] and time.monotonic() - started >= 0.2


def test_a_closing_hub_answers_what_it_holds_at_once_and_holds_nothing_more():
    """A web process told to stop (gunicorn_conf closes its hubs on SIGTERM): a held request answers now
    with what it has, instead of keeping the process up until it is cut off; a new one does not wait."""
    hub = Hub("redis://127.0.0.1:1/0", slots=2)
    hub._start = lambda: None
    answers = []

    def held():
        answers.append(hold(hub, ("z",), lambda: {"s": "pending"}, lambda v: False, 30))

    first = threading.Thread(target=held, daemon=True)
    first.start()
    support.wait_for(lambda: hub.held == 1, 10, "the request holds its slot")
    hub.close()
    first.join(10)
    assert answers == [{"s": "pending"}] and hub.held == 0
    second = threading.Thread(target=held, daemon=True)
    second.start()
    second.join(10)
    assert not second.is_alive() and answers[1:] == [{"s": "pending"}]


# ------------------------------------------------------------------ through the app, real Redis, real workers


@pytest.mark.services
def test_a_bad_wait_is_a_400_and_an_unfinished_task_is_held_no_longer_than_asked(clean_state, user):
    client = make_client(create_app({"TESTING": True}), user)
    task_id = upload(client, png_bytes(3)).get_json()["task_id"]  # no worker: it stays pending
    for bad in ("-1", "31", "nan", "soon"):
        response = client.get(f"/api/v1/tasks/{task_id}?wait={bad}")
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_request"
    started = time.monotonic()
    response = client.get(f"/api/v1/tasks/{task_id}?wait=0.5")
    assert time.monotonic() - started >= 0.5
    body = response.get_json()
    assert body["state"] == "pending" and "Retry-After" in response.headers
    assert body["poll_after_s"] > 0 and body["wait_url"] == f"/api/v1/tasks/{task_id}?wait=30"


@pytest.mark.services
def test_waiting_requests_beyond_the_slots_get_429_and_a_published_end_wakes_the_held_one(clean_state, user):
    app = create_app({"TESTING": True, "CVUNET_WAIT_SLOTS": "1"})
    task_id = upload(make_client(app, user), png_bytes(4)).get_json()["task_id"]
    answers = []
    holder = threading.Thread(
        target=lambda: answers.append(make_client(app, user).get(f"/api/v1/tasks/{task_id}?wait=20")), daemon=True
    )
    holder.start()
    hub = app.extensions["cvunet.waits"]
    support.wait_for(lambda: hub.held == 1, 10, "the first request holds the slot")
    refused = make_client(app, user).get(f"/api/v1/tasks/{task_id}?wait=5")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert make_client(app, user).get(f"/api/v1/tasks/{task_id}").status_code == 200  # plain polls still served
    # The task ends (as the worker's mirror would record it), and the end is published: the holder answers.
    from cvunet_matting import db

    with db.transaction() as cur:
        cur.execute(
            "UPDATE tasks SET state = 'failure', error = 'x', finished_at = %s WHERE id = %s",
            (datetime.now(UTC), task_id),
        )
    publish_done(task_id, None, client=support.redis())
    holder.join(15)
    assert not holder.is_alive() and answers[0].get_json()["state"] == "failure"
    assert "Retry-After" not in answers[0].headers and hub.held == 0


@pytest.mark.services
@pytest.mark.stack
def test_wait_answers_when_the_worker_finishes_and_post_wait_returns_the_finished_task(clean_state, user, slow_worker):
    client = make_client(create_app({"TESTING": True}), user)
    task_id = upload(client, png_bytes(5)).get_json()["task_id"]
    started = time.monotonic()
    response = client.get(f"/api/v1/tasks/{task_id}?wait=30")
    held = time.monotonic() - started
    body = response.get_json()
    assert body["state"] == "success" and held < 30  # woken by the end, not by the bound
    assert "Retry-After" not in response.headers and "poll_after_s" not in body
    direct = upload(client, png_bytes(6), "?wait=30")
    assert direct.status_code == 200 and direct.get_json()["state"] == "success"
    assert direct.get_json()["result_url"].endswith("/result")
    files = [(io.BytesIO(png_bytes(10 + i)), f"b{i}.png") for i in range(2)]
    batch = client.post("/api/v1/batches", data={"files": files}, content_type="multipart/form-data").get_json()
    done = client.get(f"/api/v1/batches/{batch['batch_id']}?wait=30")
    assert done.get_json()["state"] == "done" and done.get_json()["done"] == 2 and "zip_url" in done.get_json()


@pytest.mark.services
@pytest.mark.stack
def test_event_streams_deliver_the_end_of_a_task_and_of_a_batch(clean_state, user, slow_worker):
    client = make_client(create_app({"TESTING": True}), user)
    task_id = upload(client, png_bytes(7)).get_json()["task_id"]
    stream = client.get(f"/page/tasks/{task_id}/events")
    assert stream.mimetype == "text/event-stream"
    text = stream.get_data(as_text=True)  # the stream ends with the task
    events = [block for block in text.split("\n\n") if block.startswith("event:")]
    name, data = events[-1].split("\n", 1)
    assert name == "event: end" and json.loads(data.removeprefix("data: "))["state"] == "success"
    broken = png_bytes(9)[: len(png_bytes(9)) // 2]  # header intact: accepted, then failed by the worker
    files = [(io.BytesIO(png_bytes(8)), "good.png"), (io.BytesIO(broken), "broken.png")]
    batch = client.post("/api/v1/batches", data={"files": files}, content_type="multipart/form-data").get_json()
    text = client.get(f"/page/batches/{batch['batch_id']}/events").get_data(as_text=True)
    last = json.loads(text.strip().rsplit("data: ", 1)[1])
    assert (last["state"], last["done"], last["failed"]) == ("done", 1, 1)
    assert [f["filename"] for f in last["failures"]] == ["broken.png"]  # named, whatever page of items


@pytest.mark.services
def test_a_batch_wait_with_seen_answers_as_soon_as_its_finished_count_differs(clean_state, user):
    """A progress bar's long-poll (`cvunet-matting client`): ?seen= is the count of finished images it shows."""
    client = make_client(create_app({"TESTING": True}), user)
    files = [(io.BytesIO(png_bytes(20 + i)), f"s{i}.png") for i in range(2)]
    batch = client.post("/api/v1/batches", data={"files": files}, content_type="multipart/form-data").get_json()
    started = time.monotonic()
    answer = client.get(f"/api/v1/batches/{batch['batch_id']}?wait=30&seen=5")  # no worker runs: 0 finished, not 5
    assert answer.status_code == 200 and answer.get_json()["state"] != "done"
    assert time.monotonic() - started < 15  # answered at once, not at the end of the 30 s a plain ?wait= holds
    assert client.get(f"/api/v1/batches/{batch['batch_id']}?seen=x").status_code == 400


@pytest.mark.services
@pytest.mark.stack
def test_a_success_is_announced_once_after_its_row_is_committed(clean_state, user, slow_worker):
    """An image's success is committed before its task returns: Celery's own message of the stored
    result finds the row final already, and the worker sends no second message (one PUBLISH an image)."""
    from cvunet_matting.pipeline.notify import PATTERNS

    pubsub = support.redis().pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(*PATTERNS)
    client = make_client(create_app({"TESTING": True}), user)
    task_id = upload(client, png_bytes(11)).get_json()["task_id"]
    heard: list[tuple[str, str]] = []  # (channel, the row's state when the message came)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(c.startswith("celery") for c, _ in heard):
        message = pubsub.get_message(timeout=1)
        if message and message["type"] == "pmessage":
            channel = message["channel"].decode()
            ids, final = ids_in(channel, message["data"])
            if task_id in ids and final:
                heard.append((channel, support.task_row(task_id)["state"]))
    time.sleep(1)  # a second message would come now
    while (message := pubsub.get_message(timeout=0.1)) is not None:
        if message["type"] == "pmessage" and message["channel"].decode() == DONE_PREFIX + task_id:
            heard.append((DONE_PREFIX + task_id, ""))
    pubsub.close()
    assert heard == [(f"celery-task-meta-{task_id}", "success")]
