"""Places one user holds at once, counted across every web process in Redis: held `?wait=` requests
and event streams, downloads in progress.

Each place held is a member of the user's sorted set, scored by when its lease ends. It is taken and
counted in one script (no two processes both take the last place) and given back when its request
ends; one a process could not give back (killed mid-request) counts until its lease ends.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from .redis_client import get_redis

log = logging.getLogger(__name__)

# Drop the leases that ended, then take a place if one is free (nil), else answer 1: full.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 1
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return false
"""


class Full(Exception):
    """Every place of this kind is held by the user."""


@dataclass(frozen=True)
class UserSlots:
    kind: str  # "waits", "downloads"
    lease_s: int  # longer than a request of this kind holds a place

    def key(self, user_id: int) -> str:
        return f"cvunet:held:{self.kind}:{user_id}"

    def take(self, user_id: int, limit: int) -> str | None:
        """A token for one more place of the user's, or Full. None: Redis could not count, and the
        request goes ahead (per-process limits still hold): a Redis hiccup must not fail a download."""
        token, now = secrets.token_hex(8), time.time()
        try:
            full = get_redis().eval(
                _TAKE, 1, self.key(user_id), now, limit, now + self.lease_s, token, self.lease_s + 60
            )
        except redis.RedisError as exc:
            log.warning("could not count the %s of user %s: %s", self.kind, user_id, exc)
            return None
        if full:
            raise Full()
        return token

    def give_back(self, user_id: int, token: str | None) -> None:
        if token is None:
            return
        try:
            get_redis().zrem(self.key(user_id), token)
        except redis.RedisError as exc:  # it counts until its lease ends
            log.warning("could not give back a place of user %s's %s: %s", user_id, self.kind, exc)

    def held(self, user_id: int) -> int:
        """Places the user holds now (for tests and metrics)."""
        client = get_redis()
        client.zremrangebyscore(self.key(user_id), "-inf", time.time())
        return int(client.zcard(self.key(user_id)))

    @contextlib.contextmanager
    def holding(self, user_id: int, limit: int) -> Iterator[None]:
        token = self.take(user_id, limit)
        try:
            yield
        finally:
            self.give_back(user_id, token)
