"""The result backend (storage/result_backend.py): an image's success stored by the run holding its
finish claim skips Celery's read of the state stored already; every other store keeps it (a SUCCESS
already there is never overwritten). On a redis-server of the test's own, whose command counts are
this test's alone."""

from __future__ import annotations

import uuid

import pytest
import redis

from cvunet_matting.celery_app import app
from cvunet_matting.storage import result_backend
from cvunet_matting.storage.result_backend import ResultBackend
from tests.support.net import PrivateRedis

pytestmark = pytest.mark.services


@pytest.fixture
def private():
    server = PrivateRedis().start()
    try:
        yield ResultBackend(app=app, url=server.url), redis.Redis.from_url(server.url)
    finally:
        server.stop()


def gets(client: redis.Redis) -> int:
    return client.info("commandstats").get("cmdstat_get", {}).get("calls", 0)


def test_a_claim_holders_success_is_stored_without_a_read(private):
    backend, client = private
    task_id = str(uuid.uuid4())
    result_backend.hold_claim(task_id)
    try:
        before = gets(client)
        backend.store_result(task_id, {"state": "success"}, "SUCCESS")
        assert gets(client) == before  # no read first
    finally:
        result_backend.release_claim(task_id)
    assert backend.get_task_meta(task_id)["status"] == "SUCCESS"
    assert backend.get_task_meta(task_id)["result"] == {"state": "success"}


def test_every_other_store_reads_first_and_keeps_a_success(private):
    backend, client = private
    task_id = str(uuid.uuid4())
    before = gets(client)
    backend.store_result(task_id, {"first": True}, "SUCCESS")
    assert gets(client) == before + 1  # Celery's own read, unchanged without a claim
    result_backend.hold_claim(task_id)  # a claim holder's failure still reads first
    try:
        backend.store_result(task_id, ValueError("a second run failed"), "FAILURE")
    finally:
        result_backend.release_claim(task_id)
    backend.store_result(task_id, {"late": True}, "SUCCESS")  # a late second run, no claim
    meta = backend.get_task_meta(task_id)
    assert meta["status"] == "SUCCESS" and meta["result"] == {"first": True}


def subscribes(client: redis.Redis) -> int:
    return client.info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0)


def test_publishing_a_task_subscribes_to_nothing_and_a_wait_still_gets_its_result(private):
    """Celery subscribed every publisher to each task's result channel (two round trips an image);
    a caller that does wait (AsyncResult.get) subscribes then, and still gets a result stored before
    or after it began to wait."""
    import threading

    from celery.result import AsyncResult

    backend, client = private
    task_id = str(uuid.uuid4())
    backend.on_task_call(None, task_id)  # what Celery calls as it publishes a task
    assert subscribes(client) == 0
    backend.store_result(task_id, {"early": True}, "SUCCESS")
    assert AsyncResult(task_id, backend=backend, app=app).get(timeout=5) == {"early": True}
    later = str(uuid.uuid4())
    threading.Timer(0.5, backend.store_result, (later, {"late": True}, "SUCCESS")).start()
    assert AsyncResult(later, backend=backend, app=app).get(timeout=10) == {"late": True}
    assert subscribes(client) >= 1  # the waiter's own
