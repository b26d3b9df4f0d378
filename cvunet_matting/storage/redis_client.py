"""The process's Redis client, the per-task attempt counters kept in it, and the crashes counted per
input (by its content hash): the poison-input cap holds for the bytes, whichever task carries them."""

from __future__ import annotations

import os
from collections.abc import Collection

import redis
from redis.commands.core import Script

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


# A run's start in one round trip (image_run.begin_run): first, when KEYS[6] is given (the task's
# result in Celery's backend, JSON), whether the task finished already: its status one of ARGV[3]'s
# (",SUCCESS,FAILURE,...,"), then nothing is counted and {0, 0, 0, 1} comes back. Else whether it was
# cancelled (its mark, or ARGV[2] = 1 when the row says so), its number among the task's starts and,
# unless it was cancelled, the crashes of its input: the task's starts that never ended, added to the
# input's count the first time they are seen (as _ADD_CRASHES). Returns {attempts, cancelled, input
# crashes, 0}.
_BEGIN_RUN = """
if KEYS[6] then
  local meta = redis.call('GET', KEYS[6])
  if meta then
    local ok, decoded = pcall(cjson.decode, meta)
    if ok and type(decoded) == 'table' and type(decoded['status']) == 'string'
        and string.find(ARGV[3], ',' .. decoded['status'] .. ',', 1, true) then
      return {0, 0, 0, 1}
    end
  end
end
local attempts = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
if ARGV[2] == '1' or redis.call('EXISTS', KEYS[1]) == 1 then
  return {attempts, 1, 0, 0}
end
local crashes = attempts - 1 - tonumber(redis.call('GET', KEYS[3]) or '0')
local counted = tonumber(redis.call('GET', KEYS[4]) or '0')
if crashes > counted then
  redis.call('SET', KEYS[4], crashes, 'EX', ARGV[1])
  redis.call('INCRBY', KEYS[5], crashes - counted)
  redis.call('EXPIRE', KEYS[5], ARGV[1])
end
return {attempts, 0, tonumber(redis.call('GET', KEYS[5]) or '0'), 0}
"""

# A run's end in one round trip (tasks.finish_run): after a success its input's crashes forgotten,
# the end counted, and the finish claim (pipeline/finish.py) taken if nobody holds it. Returns 1 if
# this run holds the claim now.
_END_RUN = """
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[3])
end
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[4]) then
  return 1
end
return 0
"""


def _script(source: str) -> Script:
    """`source` registered with this process's client: called by its hash (EVALSHA), loaded once."""
    client = get_redis()
    if _scripts.get(source) is None or _scripts[source].registered_client is not client:
        _scripts[source] = client.register_script(source)
    return _scripts[source]


_scripts: dict[str, Script] = {}


def begin_run(
    task_id: str,
    input_key: str,
    cancelled_key: str,
    cancelled: bool,
    result_key: str | None = None,
    final_states: Collection[str] = (),
) -> tuple[int, bool, int] | None:
    """Count one more start of `task_id`, as count_attempt, in the same round trip as the reads a run
    begins with: whether it was cancelled (`cancelled`: its row says so already; else whether
    `cancelled_key` exists) and, when it was not, the crashes of its input as input_crashes counts
    them. Returns (attempts, cancelled, input crashes: 0 when cancelled).

    With `result_key` (the task's result in Celery's backend, stored as JSON), first whether the
    task finished already: its status one of `final_states`. Then nothing is counted: None."""
    keys = [cancelled_key, attempts_key(task_id), ends_key(task_id), counted_crashes_key(task_id)]
    keys += [input_crashes_key(input_key), *([result_key] if result_key else [])]
    states = "," + ",".join(sorted(final_states)) + ","
    attempts, was_cancelled, crashes, finished = _script(_BEGIN_RUN)(
        keys=keys, args=[ATTEMPTS_TTL, int(cancelled), states]
    )
    if finished:
        return None
    return int(attempts), bool(was_cancelled), int(crashes)


def end_run(task_id: str, claim_key: str, owner: str, forgive_key: str | None, ttl: int) -> bool:
    """A run's end counted (count_end), its input forgiven (forgive_input) when `forgive_key` is given,
    and the claim `claim_key` set to `owner` for `ttl` s unless another run holds it: True if this run
    holds it. One round trip; raises redis.RedisError as a plain command would."""
    keys = [claim_key, ends_key(task_id), forgive_key or claim_key]
    claimed = _script(_END_RUN)(keys=keys, args=[owner, ATTEMPTS_TTL, int(bool(forgive_key)), ttl])
    return bool(claimed)


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
    return int(_script(_ADD_CRASHES)(keys=keys, args=[task_crashes, ATTEMPTS_TTL]))


def forgive_input(input_key: str) -> None:
    """The input's crashes forgotten: it ran to the end, or an admin forced a retry."""
    get_redis().delete(input_crashes_key(input_key))


def reset_attempts(task_ids: list[str]) -> None:
    """A task run again as new work: its starts and ends forgotten (its input's crashes are kept)."""
    if task_ids:
        keys = [key(t) for t in task_ids for key in (attempts_key, ends_key, counted_crashes_key)]
        get_redis().delete(*keys)
