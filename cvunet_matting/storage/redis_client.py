"""The process's Redis client, and the per-task attempt counters kept in it."""

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


def reset_attempts(task_ids: list[str]) -> None:
    if task_ids:
        get_redis().delete(*[attempts_key(t) for t in task_ids], *[ends_key(t) for t in task_ids])
