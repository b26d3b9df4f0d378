"""How much work each queue has: waiting, and in the workers' hands. The honest scaling signal.

A Celery queue on Redis is a list, and a message leaves it the moment a worker takes it: prefetched
(waiting in the worker for a free pool process) or running, it is in kombu's `unacked` hash instead
(acks_late: until the image is done), and for a moment after a BRPOP reply it is in neither
(transport.reply_unread). The list's length alone reads 0 while every GPU is busy, and an
autoscaler reading it would stop workers in the middle of a batch. Here each queue counts:

- ready: messages in its Redis list (every priority's list);
- delivered: messages in `unacked` routed to it: prefetched or running on some worker;
- held: what live workers' heartbeats (liveness.beat) say they hold that is in neither, and one for
  each worker of the queue whose consumer has a reply it cannot read yet.

Read from Redis at scrape time (webapp/metrics.py, `cvunet_queue_work`); nothing is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from . import liveness
from .transport import UNACKED, queued_ids

PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's Redis transport: one list per step, the bare name for 0
PRIORITY_SEP = "\x06\x16"


@dataclass(frozen=True)
class Work:
    ready: int = 0
    delivered: int = 0
    held: int = 0

    @property
    def total(self) -> int:
        return self.ready + self.delivered + self.held


def ready(client: redis.Redis, queue: str) -> int:
    names = [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.llen(name)
        return sum(pipe.execute())


def delivered(client: redis.Redis, queues: Iterable[str]) -> dict[str, set[str]]:
    """Task ids in `unacked`, by the queue they were routed to (each queue has its own exchange and
    routing key, celeryconfig.py). A message of no queue named here is left out."""
    wanted = set(queues)
    found: dict[str, set[str]] = {queue: set() for queue in wanted}
    for raw in client.hvals(UNACKED):
        try:
            message, exchange, routing_key = json.loads(raw)
            task_id = message["headers"]["id"]
        except (ValueError, KeyError, TypeError):  # not a Celery message: no image of ours
            continue
        queue = routing_key if routing_key in wanted else exchange
        if queue in wanted:
            found[queue].add(task_id)
    return found


def queue_work(client: redis.Redis, queues: Iterable[str]) -> dict[str, Work]:
    """Each queue's work waiting and in hand."""
    names = list(queues)
    in_unacked = delivered(client, names)
    known = set().union(*in_unacked.values())
    for queue in names:
        known |= queued_ids(client, queue)
    extra = {queue: 0 for queue in names}
    for beat in liveness.beats(client).values():
        mine = [q for q in beat.get("queues", []) if q in extra]
        if len(mine) != 1:  # a worker of several queues (none here) cannot say whose its work is
            continue
        extra[mine[0]] += len(set(beat["held"]) - known) + (1 if beat.get("receiving") else 0)
    return {queue: Work(ready(client, queue), len(in_unacked[queue]), extra[queue]) for queue in names}
