"""/readyz under many callers: one worker broadcast at a time, and nobody queues behind it.

The broadcast is replaced by one the test holds open (a real one waits a second for replies), so what
is checked is who waits for it, not how long anything takes.
"""

from __future__ import annotations

import threading

import pytest

from cvunet_matting.webapp import health
from tests import support

pytestmark = [pytest.mark.services]


class HeldBroadcast:
    """Stands for Celery's ping broadcast: counts the broadcasts and holds each until `gate` is set."""

    def __init__(self, workers: int):
        self.workers = workers
        self.started = 0
        self.gate = threading.Event()

    def __call__(self) -> int:
        self.started += 1
        self.gate.wait(timeout=120)
        return self.workers


@pytest.fixture
def broadcast(monkeypatch):
    held = HeldBroadcast(workers=1)
    monkeypatch.setattr(health, "ping_workers", held)
    yield held
    held.gate.set()


def readyz_in_threads(app, count: int):
    answers: list = []

    def ask():
        response = app.test_client().get("/readyz")
        answers.append((response.status_code, response.get_json()["workers"]))

    threads = [threading.Thread(target=ask, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, answers


def all_done(threads, timeout: float = 60) -> bool:
    for thread in threads:
        thread.join(timeout=timeout)
    return not any(thread.is_alive() for thread in threads)


def test_readyz_answers_from_the_last_probe_while_a_broadcast_is_under_way(app, broadcast):
    broadcast.gate.set()
    assert app.test_client().get("/readyz").status_code == 200
    assert broadcast.started == 1
    app.extensions[health.PROBE].at -= 3600  # the count has grown old: the next caller asks again
    broadcast.gate.clear()
    prober, _ = readyz_in_threads(app, 1)
    support.wait_until(lambda: broadcast.started == 2, 60, message="the second broadcast")
    callers, answers = readyz_in_threads(app, 8)
    assert all_done(callers), "callers queued behind the broadcast"
    assert answers == [(200, 1)] * 8 and broadcast.started == 2  # the last count, no broadcast of their own
    broadcast.gate.set()
    assert all_done(prober)


def test_the_first_callers_wait_for_one_broadcast_side_by_side(app, broadcast):
    callers, answers = readyz_in_threads(app, 4)
    support.wait_until(lambda: broadcast.started == 1, 60, message="the first broadcast")
    broadcast.gate.set()
    assert all_done(callers)
    assert answers == [(200, 1)] * 4 and broadcast.started == 1  # one broadcast answered all four
