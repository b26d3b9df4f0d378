"""What the Redis transport holds: queued messages, and delivered ones not yet acknowledged.

Kombu's Redis transport keeps a delivered message in the `unacked` hash (delivery tag -> [message,
exchange, routing key]) with its delivery time in the `unacked_index` sorted set, until the worker
acknowledges it or the visibility timeout passes. These functions read those keys and hand messages
back through kombu's own restore, so a restored message is queued exactly as kombu itself would.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import redis

UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"


@dataclass(frozen=True)
class Delivery:
    tag: str
    task_id: str
    delivered_at: float


def _task_id(raw: bytes | str) -> str:
    return json.loads(raw)[0]["headers"]["id"]


# A queued message's task id, as kombu's JSON writes it in the message's headers: `"id": "<uuid>"`.
# No other key of a Celery message is `id` (root_id, parent_id, correlation_id end in it, but the
# quote before `id` is the key's own), and the body is base64, so the pattern occurs once.
_HEADER_ID = re.compile(rb'"id": "([0-9a-fA-F-]{36})"')


def queued_id(raw: bytes | str) -> str:
    """The task id of a queued message: found by the pattern when it occurs exactly once, else read
    from the parsed JSON. Reconcile looks at every queued message every few seconds; parsing each
    whole (its base64 body too) was most of a busy worker's watchdog CPU."""
    found = _HEADER_ID.findall(raw.encode() if isinstance(raw, str) else raw)
    if len(found) == 1:
        return found[0].decode()
    return json.loads(raw)["headers"]["id"]


def queued_ids(client: redis.Redis, queue: str) -> set[str]:
    """Task ids waiting in the queue."""
    return {queued_id(raw) for raw in client.lrange(queue, 0, -1)}


def deliveries(client: redis.Redis) -> list[Delivery]:
    """Every delivered, unacknowledged message (one missing from the index counts as delivered long ago)."""
    raw = client.hgetall(UNACKED)
    times = dict(client.zrange(UNACKED_INDEX, 0, -1, withscores=True))
    return [Delivery(tag.decode(), _task_id(payload), float(times.get(tag, 0.0))) for tag, payload in raw.items()]


def held_ids(client: redis.Redis, queue: str) -> set[str]:
    """Task ids Redis holds: queued, or delivered and not yet acknowledged."""
    return queued_ids(client, queue) | {d.task_id for d in deliveries(client)}


def reply_unread(channel) -> bool:
    """Whether this consumer has a BRPOP in flight that it may not read yet, having no free prefetch slot.

    Redis takes a message off the queue when it answers a BRPOP; kombu puts it in `unacked` only once
    it reads the reply, and it reads it only while the channel can consume (kombu >= 5.7 parks the
    reply, older versions leave it unread). A Celery worker's slots shrink under a BRPOP in flight when
    a countdown (ETA) task it holds becomes due: the task takes the slot the BRPOP was sent for. Until
    a slot frees up, the message in that reply is in neither the queue nor `unacked`.
    """
    return bool(getattr(channel, "_in_poll", None)) and not channel.qos.can_consume()


def restore(app, tags: list[str]) -> None:
    """Put delivered messages back on their queue now, by kombu's own restore (first in line)."""
    if not tags:
        return
    with app.connection_for_write() as conn:
        qos = conn.default_channel.qos
        for tag in tags:
            qos.restore_by_tag(tag)


def discard(client: redis.Redis, queue: str, task_ids: set[str]) -> int:
    """Remove every message for these task ids, queued or delivered: they can never run again.

    Used before a stuck task is published anew, so its original message cannot come back later.
    """
    removed = 0
    for delivery in deliveries(client):
        if delivery.task_id in task_ids:
            with client.pipeline() as pipe:
                pipe.hdel(UNACKED, delivery.tag).zrem(UNACKED_INDEX, delivery.tag).execute()
            removed += 1
    for raw in client.lrange(queue, 0, -1):
        if json.loads(raw)["headers"]["id"] in task_ids:
            removed += client.lrem(queue, 0, raw)
    return removed
