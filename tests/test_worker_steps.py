"""The worker's lifecycle bootsteps (worker/steps.py), in the blueprints a real worker of the app builds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from celery import signals

from cvunet_matting.celery_app import app
from cvunet_matting.recovery import liveness
from cvunet_matting.worker.steps import LivenessStep
from tests import support

# Builds the worker `celery -A cvunet_matting worker` builds (its steps created, none started) and
# prints the order its blueprints start their steps in.
BUILD_WORKER = """
import json
from cvunet_matting.celery_app import app
w = app.WorkController(hostname="steps@test", pool_cls="prefork", concurrency=2)
print(json.dumps({"worker": [s.alias for s in w.steps], "consumer": [s.alias for s in w.consumer.steps]}))
"""


def boot_order(hash_seed: int, **env: str) -> dict[str, list[str]]:
    run_env = {**os.environ, "PYTHONHASHSEED": str(hash_seed), **env}
    out = subprocess.run(
        [sys.executable, "-c", BUILD_WORKER], cwd=support.REPO, env=run_env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# Celery orders the steps a `requires` leaves unordered by how their names hash, which changes with
# the seed: 6 and 8 put the device host after the Pool, 0 before it (seen without ahead_of_pool).
@pytest.mark.parametrize("hash_seed", [0, 6, 8])
def test_the_device_host_starts_before_the_pool_forks_and_stops_after_it(hash_seed):
    """The pool processes inherit the device's address and key; its images need the device until
    the pool has finished them (the blueprint stops its steps in reverse)."""
    order = boot_order(hash_seed, CVUNET_OVERLAP="1", CVUNET_WORKER_ROLE="model")
    worker = order["worker"]
    assert worker.index("Device host") < worker.index("Pool") < worker.index("Consumer"), worker
    consumer = order["consumer"]
    assert consumer.index("Tasks") < consumer.index("Liveness") < consumer.index("event loop"), consumer


@pytest.mark.parametrize(
    "env",
    [
        {"CVUNET_OVERLAP": "0", "CVUNET_WORKER_ROLE": "model"},  # a CPU worker: the model in its one child
        {"CVUNET_OVERLAP": "1", "CVUNET_WORKER_ROLE": "bookkeeping"},  # no model at all
    ],
)
def test_a_worker_without_a_device_process_has_no_device_host_but_its_liveness(env):
    order = boot_order(1, **env)
    assert "Device host" not in order["worker"] and "Pool" in order["worker"], order
    assert "Liveness" in order["consumer"], order


class ConsumerStandIn:
    """What the step reads of the worker's consumer: no task consumer yet, as while it connects.
    (A class, not a namespace: a signal's sender must be hashable, as Celery's consumer is.)"""

    def __init__(self, hostname: str):
        self.hostname, self.app, self.task_consumer = hostname, app, None


@pytest.mark.services
def test_the_beat_goes_on_through_a_consumer_restart_and_ends_with_the_worker(clean_state):
    """The broker reconnecting stops and starts the consumer's steps: a beat that stopped then would
    let another worker take this one's images for abandoned. It ends at the consumer's shutdown,
    which comes once the pool has finished (WorkController.on_stopped)."""
    consumer = ConsumerStandIn("restarts@test")
    step = LivenessStep(consumer)
    client = support.redis()
    step.start(consumer)
    try:
        support.wait_until(lambda: step.incarnation in liveness.live_workers(client), 10, message="no beat")
        watchdog = step.watchdog
        step.stop(consumer)  # the broker went away...
        step.start(consumer)  # ...and came back
        assert step.watchdog is watchdog and watchdog.is_alive()
        assert step.incarnation in liveness.live_workers(client)
    finally:
        step.shutdown(consumer)
    assert not watchdog.is_alive()
    assert step.incarnation not in liveness.live_workers(client)  # a clean stop is not a death
    assert client.zscore(liveness.BEATS, step.incarnation) is None  # nor left in the index for a reader to prune


@pytest.mark.services
def test_a_worker_records_itself_as_the_owner_of_the_messages_its_consumer_receives(clean_state):
    """One process may hold two workers' consumers (the tests do): each owns only what it received."""
    ours, theirs = ConsumerStandIn("ours@test"), ConsumerStandIn("theirs@test")
    step = LivenessStep(ours)
    step.create(ours)  # as the consumer's blueprint includes it
    client = support.redis()
    step.start(ours)
    try:
        signals.task_received.send(sender=ours, request=SimpleNamespace(id="ours-1"))
        signals.task_received.send(sender=theirs, request=SimpleNamespace(id="theirs-1"))
        # Recorded with the next beat (liveness.beat), well within the grace a message is left alone.
        support.wait_until(lambda: client.get(liveness.OWNER + "ours-1"), 10, message="owner not recorded")
        time.sleep(2 * step.watchdog.settings.heartbeat_interval)  # a beat or two more: nothing else comes
    finally:
        step.shutdown(ours)
    signals.task_received.send(sender=ours, request=SimpleNamespace(id="ours-after-shutdown"))
    assert client.get(liveness.OWNER + "ours-1").decode() == step.incarnation
    assert client.get(liveness.OWNER + "theirs-1") is None
    assert client.get(liveness.OWNER + "ours-after-shutdown") is None


@pytest.mark.services
def test_owners_a_beat_could_not_record_go_with_the_next_beat(clean_state):
    """Owners are recorded with the beat (one round trip a beat, not one a message): a beat that
    cannot reach Redis keeps the ids it took, and the next one records them."""
    import redis as redis_lib

    from cvunet_matting.config import get_settings
    from cvunet_matting.worker.watchdog import Received, Watchdog

    received = Received()
    watchdog = Watchdog(app, "owner@test/1/x", get_settings(), held=lambda: {"a-1"}, received=received)
    received.add("a-1")
    unreachable = redis_lib.Redis(port=support.free_port(), socket_connect_timeout=0.5)
    with pytest.raises(redis_lib.ConnectionError):
        watchdog.beat(unreachable)
    client = support.redis()
    assert client.get(liveness.OWNER + "a-1") is None
    received.add("a-2")
    watchdog.beat(client)
    assert client.get(liveness.OWNER + "a-1") == client.get(liveness.OWNER + "a-2") == b"owner@test/1/x"
    assert 0 < client.ttl(liveness.OWNER + "a-1") <= liveness.OWNER_TTL
    assert received.take() == []  # each recorded once
    client.delete(liveness.BEAT + "owner@test/1/x")
