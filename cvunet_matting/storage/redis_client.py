"""The process's Redis client, the per-task attempt counters kept in it, and the crashes counted per
input (by its content hash): the poison-input cap holds for the bytes, whichever task carries them."""

from __future__ import annotations

import os

import redis

from cvunet_matting.config import get_settings

_client: redis.Redis | None = None
_pid: int | None = None

ATTEMPTS_TTL = 7 * 24 * 3600


def get_redis() -> redis.Redis:
    """One client per process, made on first use (and again after a fork)."""
    global _client, _pid
    if _client is None or _pid != os.getpid():
        _client = redis.Redis.from_url(get_settings().redis_url, socket_timeout=5, health_check_interval=30)
        _pid = os.getpid()
    return _client


def attempts_key(task_id: str) -> str:
    return f"cvunet:attempts:{task_id}"


def ends_key(task_id: str) -> str:
    return f"cvunet:ends:{task_id}"


def input_crashes_key(input_key: str) -> str:
    return f"cvunet:crashes:{input_key}"


def counted_crashes_key(task_id: str) -> str:
    """How many of the task's crashes its input's count holds already."""
    return f"cvunet:crashes-counted:{task_id}"


# Adds the task's crashes not yet counted to its input's count, once each however many runs look.
_ADD_CRASHES = """
local counted = tonumber(redis.call('GET', KEYS[1]) or '0')
local crashes = tonumber(ARGV[1])
if crashes > counted then
  redis.call('SET', KEYS[1], crashes, 'EX', ARGV[2])
  redis.call('INCRBY', KEYS[2], crashes - counted)
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return tonumber(redis.call('GET', KEYS[2]) or '0')
"""


def _incr(key: str) -> int:
    with get_redis().pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, ATTEMPTS_TTL)
        count, _ = pipe.execute()
    return int(count)


def count_attempt(task_id: str) -> int:
    """Count one more start of `task_id`; survives the death of the worker that ran it."""
    return _incr(attempts_key(task_id))


def count_end(task_id: str) -> None:
    """Count a run of `task_id` that ended (succeeded, failed, retried or dropped): a start with no
    end is a run whose process died, which is what the poison-input cap counts."""
    _incr(ends_key(task_id))


def ended_runs(task_id: str) -> int:
    return int(get_redis().get(ends_key(task_id)) or 0)


def input_crashes(task_id: str, input_key: str, task_crashes: int) -> int:
    """The worker processes that died on these bytes, in any task: the task's own `task_crashes` (its
    starts that never ended) added to the input's count the first time they are seen."""
    keys = [counted_crashes_key(task_id), input_crashes_key(input_key)]
    return int(get_redis().eval(_ADD_CRASHES, 2, *keys, task_crashes, ATTEMPTS_TTL))


def forgive_input(input_key: str) -> None:
    """The input's crashes forgotten: it ran to the end, or an admin forced a retry."""
    get_redis().delete(input_crashes_key(input_key))


def reset_attempts(task_ids: list[str]) -> None:
    """A task run again as new work: its starts and ends forgotten (its input's crashes are kept)."""
    if task_ids:
        keys = [key(t) for t in task_ids for key in (attempts_key, ends_key, counted_crashes_key)]
        get_redis().delete(*keys)
