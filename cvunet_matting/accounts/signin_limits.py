"""How many wrong passwords a name takes before sign-in stops trying, and who may lift that.

Counted per account name, in one Redis hash per name that lives for a window from its first
failure: one field per client address, one for the name's total. A name is refused (429) to an
address that has guessed wrong FAILS_PER_ADDRESS times, and to everyone once FAILS_PER_NAME wrong
guesses came in from all addresses together. So one address cannot lock an account out for its
owner (only a many-address attack reaches the name's total), and a many-address guesser is still
stopped. A right password, `cvunet-matting user unlock`, a new password or re-enabling the account
clears the name.
"""

from __future__ import annotations

import hashlib

from cvunet_matting.storage.redis_client import get_redis

FAILS_PER_ADDRESS = 10
FAILS_PER_NAME = 100
WINDOW_S = 900
TOTAL = "*"  # the name's field for all addresses together (no address is "*")


def _key(name: str) -> str:
    return "cvunet:signin-fails:" + hashlib.sha256(name.strip().lower().encode()).hexdigest()[:32]


def locked_for(name: str, address: str) -> int:
    """Seconds until `address` may try `name` again (0: now)."""
    key = _key(name)
    mine, total = get_redis().hmget(key, address, TOTAL)
    if int(mine or 0) < FAILS_PER_ADDRESS and int(total or 0) < FAILS_PER_NAME:
        return 0
    return max(int(get_redis().ttl(key)), 1)


def count_failure(name: str, address: str) -> None:
    key = _key(name)
    with get_redis().pipeline() as pipe:
        pipe.hincrby(key, address, 1).hincrby(key, TOTAL, 1).expire(key, WINDOW_S, nx=True).execute()


def clear(name: str) -> bool:
    """Forget every failure counted against `name`; True if there were any."""
    return bool(get_redis().delete(_key(name)))
