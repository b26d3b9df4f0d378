"""A matte_image run's Redis bookkeeping in one round trip at each end (storage/redis_client.py
begin_run and end_run): the same counts as the commands they replace (count_attempt, ended_runs,
input_crashes, count_end, forgive_input, the finish claim), on a real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis

from cvunet_matting.celery_app import app
from cvunet_matting.pipeline import cancelling, finish
from cvunet_matting.storage import redis_client
from cvunet_matting.storage.redis_client import (
    begin_run,
    count_attempt,
    count_end,
    end_run,
    ended_runs,
    forgive_input,
    input_crashes,
    input_crashes_key,
)
from tests import support

pytestmark = pytest.mark.services


def new_ids() -> tuple[str, str]:
    return str(uuid.uuid4()), f"input-{uuid.uuid4().hex}"


def begin(task_id: str, input_key: str, row_cancelled: bool = False) -> tuple[int, bool, int]:
    return begin_run(task_id, input_key, cancelling.CANCELLED + task_id, row_cancelled)


def begin_with_commands(task_id: str, input_key: str) -> tuple[int, int]:
    """What a run counted before, one command at a time."""
    attempts = count_attempt(task_id)
    return attempts, input_crashes(task_id, input_key, attempts - 1 - ended_runs(task_id))


def test_a_runs_start_counts_what_the_separate_commands_counted(clean_state):
    """Two starts that never ended (crashes), then one that ends, then a new task with the same bytes:
    the script and the commands give the same attempts and crash counts at every step."""
    scripted, by_commands = new_ids(), new_ids()
    seen: list[tuple] = []
    for (task_id, input_key), start in ((scripted, begin), (by_commands, begin_with_commands)):
        steps = []
        for _ in range(3):  # the first two runs die: no end counted
            counts = start(task_id, input_key)
            steps.append((counts[0], counts[-1]))
        count_end(task_id)
        other_task = str(uuid.uuid4())  # the same bytes as a new task: the input's count holds for it
        counts = start(other_task, input_key)
        steps.append((counts[0], counts[-1]))
        seen.append(tuple(steps))
    assert seen[0] == seen[1] == ((1, 0), (2, 1), (3, 2), (1, 2))


def test_a_cancelled_run_is_numbered_and_its_input_left_alone(clean_state):
    task_id, input_key = new_ids()
    begin(task_id, input_key)  # a run that died
    cancelling.mark(support.redis(), [task_id])
    assert begin(task_id, input_key) == (2, True, 0)
    assert support.redis().get(input_crashes_key(input_key)) is None  # its crash not counted meanwhile
    other, _ = new_ids()
    assert begin(other, input_key, row_cancelled=True) == (1, True, 0)  # the row says so: no mark needed


def test_a_runs_end_counts_it_forgives_its_input_and_takes_the_claim_once(clean_state):
    task_id, input_key = new_ids()
    begin(task_id, input_key)
    begin(task_id, input_key)  # the first run died: one crash on these bytes
    assert int(support.redis().get(input_crashes_key(input_key))) == 1
    key = finish.CLAIM + task_id
    assert end_run(task_id, key, "w1/1", input_crashes_key(input_key), finish.CLAIM_TTL) is True
    assert ended_runs(task_id) == 1
    assert support.redis().get(input_crashes_key(input_key)) is None  # forgiven: it ran to the end
    assert support.redis().get(key) == b"w1/1"
    assert 0 < support.redis().ttl(key) <= finish.CLAIM_TTL
    # A second copy's end is counted too, but the claim stays the first run's (the first result wins).
    assert end_run(task_id, key, "w2/2", None, finish.CLAIM_TTL) is False
    assert ended_runs(task_id) == 2
    assert support.redis().get(key) == b"w1/1"


def test_a_failed_runs_end_keeps_its_inputs_crashes(clean_state):
    task_id, input_key = new_ids()
    begin(task_id, input_key)
    begin(task_id, input_key)
    assert end_run(task_id, finish.CLAIM + task_id, "w1/1", None, finish.CLAIM_TTL) is True
    assert int(support.redis().get(input_crashes_key(input_key))) == 1
    forgive_input(input_key)  # what an admin's forced retry still does alone
    assert support.redis().get(input_crashes_key(input_key)) is None


def test_the_claim_is_taken_alone_when_the_one_round_trip_cannot_reach_redis(clean_state):
    """The end's script meets a dropped connection: the claim is set by the plain command (which
    waits for Redis as it always did), and the run's end is left to be counted on its own."""
    task_id = str(uuid.uuid4())
    tried = []

    def unreachable(key: str, ttl: int) -> bool:
        tried.append(key)
        raise redis.ConnectionError("connection refused")

    assert finish.claim(redis_client.get_redis(), app, task_id, "w1/1", first_try=unreachable) is True
    assert tried == [finish.CLAIM + task_id]
    assert support.redis().get(finish.CLAIM + task_id) == b"w1/1"
    assert ended_runs(task_id) == 0
