"""Which workers are alive, and which delivered messages a dead one left behind.

Each worker process (one *incarnation*: a restarted worker with the same name is a new one) keeps a
heartbeat key in Redis that expires unless refreshed, listing the task ids it holds. It records
itself as the owner of each message it receives, with its next beat (one round trip a beat, not one
a message: a message is never taken within `grace` of its delivery, which is longer than a beat's
interval, so an owner recorded a beat late is recorded in time). A delivered message whose owner's
heartbeat has expired was abandoned: the node died, was cut off, or froze for longer than the
heartbeat's lifetime. It goes back on the queue at once instead of waiting for the transport's
visibility timeout (an hour by default). A slow task on a live worker keeps its owner alive, so it
is never taken away; a worker declared dead that comes back finds its result already there
(`finish` makes the first result win).

Live workers are listed from an index, the sorted set BEATS (incarnation -> the time of its last beat,
by its own clock), each read by its heartbeat key: two round trips, however many keys Redis holds
(every image leaves a few for a week). A member whose heartbeat has expired is removed by the reader
that finds it so. Workers of a version before the index wrote no member: for one release they are
still found by a SCAN of the keyspace (`LegacyBeats`), once a minute and before a republish.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable

import redis

from .transport import Delivery, deliveries

BEAT = "cvunet:beat:"
BEATS = "cvunet:beats"  # the index of incarnations that beat (see the module)
OWNER = "cvunet:owner:"
LEADER = "cvunet:watchdog-leader"
OWNER_TTL = 7 * 24 * 3600


def new_incarnation(hostname: str | None = None) -> str:
    """An id for this worker process: name, pid and a random part (a restart is a new incarnation)."""
    return f"{hostname or socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def beat(
    client: redis.Redis,
    incarnation: str,
    held: Iterable[str],
    ttl: float,
    receiving: bool = False,
    queues: Iterable[str] = (),
    received: Iterable[str] = (),
) -> None:
    """Say this worker is alive for `ttl` seconds more, what it holds, whether its consumer has a
    reply it cannot read yet (`receiving`: a message in it is in neither the queue nor `unacked`), and
    the queues it consumes (whose work that is: recovery/backlog.py); and, in the same round trip and
    transaction, record it as the owner of the messages it `received` since its last beat."""
    now = time.time()
    payload = json.dumps({"held": sorted(held), "receiving": receiving, "queues": sorted(queues), "at": now})
    with client.pipeline() as pipe:
        pipe.set(BEAT + incarnation, payload, px=int(ttl * 1000))
        pipe.zadd(BEATS, {incarnation: now})  # in the same transaction: no beat outside the index
        for task_id in received:
            pipe.set(OWNER + task_id, incarnation, ex=OWNER_TTL)
        pipe.execute()


def beats(client: redis.Redis, legacy: LegacyBeats | None = None, rescan: bool = False) -> dict[str, dict]:
    """Live incarnations and their last beat (held, receiving, queues, at): the index's members, and
    (`legacy`, the process's own by default) the beats of workers of the version before it, rescanned
    now when `rescan` (see LegacyBeats)."""
    legacy = LEGACY if legacy is None else legacy
    indexed = [member.decode() for member in client.zrange(BEATS, 0, -1)]
    known = set(indexed)
    older = [name for name in legacy.names(client, rescan) if name not in known]
    names = indexed + older
    values = client.mget([BEAT + name for name in names]) if names else []
    found = {name: json.loads(value) for name, value in zip(names, values, strict=True) if value is not None}
    prune(client, [name for name in indexed if name not in found])
    return found


# Removes index members (ARGV) whose heartbeat key (KEYS[2..], in the same order) does not exist, in
# one atomic step: a worker that beats again between a reader's look and this removal stays.
_PRUNE = """
local removed = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return removed
"""


def prune(client: redis.Redis, gone: list[str]) -> int:
    """Index members whose heartbeat was found expired, removed unless they beat again meanwhile."""
    if not gone:
        return 0
    return int(client.eval(_PRUNE, len(gone) + 1, BEATS, *[BEAT + name for name in gone], *gone))


def forget(client: redis.Redis, incarnation: str) -> None:
    """A clean stop: the beat and its index member removed (not a death: nothing it held is taken)."""
    with client.pipeline() as pipe:
        pipe.delete(BEAT + incarnation)
        pipe.zrem(BEATS, incarnation)
        pipe.execute()


class LegacyBeats:
    """Heartbeats of workers of the version before BEATS, found by a SCAN of the whole keyspace, which
    grows with every image: kept for one release, so that such a worker is still seen during a rolling
    upgrade, then to be removed with this class.

    The names it found are read again by name at every `beats`; the SCAN itself runs at most every
    `every` seconds, and whenever a caller asks (`rescan`): reconcile asks before it republishes
    anything, so that no image an older worker holds is run twice. Between two scans an older worker
    started meanwhile is not listed: the backlog metric leaves out what it holds for that long."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._names: list[str] = []
        self._scanned = float("-inf")
        self._lock = threading.Lock()  # the watchdog's threads and the web's share one

    def names(self, client: redis.Redis, rescan: bool = False) -> list[str]:
        with self._lock:
            if rescan or time.monotonic() - self._scanned >= self.every:
                found = [key.decode()[len(BEAT) :] for key in client.scan_iter(match=BEAT + "*", count=500)]
                indexed = {member.decode() for member in client.zrange(BEATS, 0, -1)}
                self._names = [name for name in found if name not in indexed]
                self._scanned = time.monotonic()
            return list(self._names)


LEGACY = LegacyBeats()


def live_workers(client: redis.Redis) -> dict[str, set[str]]:
    """Live incarnations and the task ids each holds."""
    return {incarnation: set(b["held"]) for incarnation, b in beats(client).items()}


def held_by_live_workers(client: redis.Redis) -> set[str]:
    return set().union(*live_workers(client).values())


def abandoned(
    found: list[Delivery], owners: dict[str, str | None], live: set[str], now: float, grace: float
) -> list[Delivery]:
    """Deliveries whose owner is not alive, delivered over `grace` seconds ago: the receiving
    worker records itself as owner a moment after taking a message, and its first heartbeat
    follows within a beat."""
    return [d for d in found if owners.get(d.task_id) not in live and now - d.delivered_at > grace]


def find_abandoned(client: redis.Redis, grace: float) -> list[Delivery]:
    """Deliveries whose owner is not alive (see `abandoned`). Whether an owner is alive is read from
    its own heartbeat key, not from a listing of every beat: `beats` scans the whole keyspace, which
    grows with every image (each leaves keys for a week), and this runs every second."""
    found = deliveries(client)
    if not found:
        return []
    owned = client.mget([OWNER + d.task_id for d in found])
    owners = {d.task_id: (o.decode() if o else None) for d, o in zip(found, owned, strict=True)}
    candidates = sorted({o for o in owners.values() if o})
    alive = client.mget([BEAT + o for o in candidates]) if candidates else []
    live = {o for o, beat in zip(candidates, alive, strict=True) if beat is not None}
    return abandoned(found, owners, live, time.time(), grace)


def lead(client: redis.Redis, incarnation: str, ttl: float) -> bool:
    """True while this incarnation is the one watchdog that sweeps; another takes over if it dies."""
    if client.set(LEADER, incarnation, nx=True, px=int(ttl * 1000)):
        return True
    if (client.get(LEADER) or b"").decode() == incarnation:
        client.pexpire(LEADER, int(ttl * 1000))
        return True
    return False
