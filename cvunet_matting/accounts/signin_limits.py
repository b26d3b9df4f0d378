"""How often a password may be tried, by whom, and how many are hashed at once.

Three limits, all settled before a password is hashed (argon2id: 64 MiB and a few cores for a moment):
- `HashSlots`: at most CVUNET_SIGNIN_HASHES hashes at once in a web process; one more is refused (429)
  at once, never queued, so a flood costs a bounded amount of memory and CPU whatever the names.
- per client address, ADDRESS_FAILS wrong passwords across all names within ADDRESS_WINDOW_S (IPv6 by
  its /64: one host usually holds a whole /64, so rotating addresses in it is one client).
- per name, a delay that doubles with each wrong password past FREE_FAILS (1 s, 2 s, 4 s ... up to
  MAX_DELAY_S after the last one) instead of a lock. The delay is counted apart for each address the
  name has signed in from before (`remember`), and for a browser holding the name's valid session, so
  guessing from elsewhere slows the guessers but never keeps the owner out from where they sign in.

Each try is counted as wrong before its hash runs (one Redis script checks and counts), and taken back
when it succeeds: parallel guesses cannot slip in between the check and the count. A right password
clears its own address's count; `cvunet-matting user unlock`, a new password or re-enabling the
account clears every count of the name.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from cvunet_matting.storage.redis_client import get_redis

FREE_FAILS = 5  # typos: no delay for the first few wrong passwords
MAX_DELAY_S = 900
NAME_MEMORY_S = 86_400  # a name's counts are forgotten a day after its last wrong password
ADDRESS_FAILS = 30
ADDRESS_WINDOW_S = 900
KNOWN_FOR_S = 90 * 86_400  # an address a name signed in from stays known this long after
KNOWN_PER_NAME = 20  # the most recent ones: a name's list never grows without bound
ELSEWHERE = "*"  # the scope of every address the name has not signed in from (no bucket is "*")

_PREFIX = "cvunet:signin:"
# KEYS: the name's counts, the address's count. ARGV: now, scope, trusted (1/0), FREE_FAILS, MAX_DELAY_S,
# ADDRESS_FAILS, ADDRESS_WINDOW_S, NAME_MEMORY_S. Returns the seconds to wait, or 0 with the try counted.
_CLAIM = """
local now, scope, trusted = tonumber(ARGV[1]), ARGV[2], ARGV[3] == '1'
local free, cap = tonumber(ARGV[4]), tonumber(ARGV[5])
local fails = tonumber(redis.call('HGET', KEYS[1], 'n:' .. scope) or '0')
local last = tonumber(redis.call('HGET', KEYS[1], 't:' .. scope) or '0')
local wait = 0
if fails >= free then
  wait = last + math.min(2 ^ (fails - free), cap) - now
end
if not trusted and tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[6]) then
  wait = math.max(wait, redis.call('TTL', KEYS[2]), 1)
end
if wait > 0 then
  return math.ceil(wait)
end
redis.call('HINCRBY', KEYS[1], 'n:' .. scope, 1)
redis.call('HSET', KEYS[1], 't:' .. scope, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[8])
if not trusted then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[7], 'NX')
end
return 0
"""


class HashSlots:
    """At most `size` password hashes at once in this process; a try beyond them is refused, not queued."""

    def __init__(self, size: int):
        self.size = size
        self._free = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        """Yields whether a slot was free (and holds it until the block ends)."""
        got = self._free.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                self._free.release()


def address_bucket(address: str) -> str:
    """The client an address stands for: an IPv4 address, or an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]  # not an address (a unix socket's peer): its own bucket
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def _name_id(name: str) -> str:
    return hashlib.sha256(name.strip().lower().encode()).hexdigest()[:32]


def _counts_key(name: str) -> str:
    return _PREFIX + "fails:" + _name_id(name)


def _known_key(name: str) -> str:
    return _PREFIX + "known:" + _name_id(name)


def _address_key(bucket: str) -> str:
    return _PREFIX + "address:" + bucket


def knows(name: str, bucket: str) -> bool:
    """Whether `name` signed in from this address (bucket) within KNOWN_FOR_S."""
    since = get_redis().zscore(_known_key(name), bucket)
    return since is not None and since >= time.time() - KNOWN_FOR_S


def remember(name: str, bucket: str) -> None:
    key, now = _known_key(name), time.time()
    with get_redis().pipeline() as pipe:
        pipe.zadd(key, {bucket: now}).zremrangebyscore(key, "-inf", now - KNOWN_FOR_S)
        pipe.zremrangebyrank(key, 0, -KNOWN_PER_NAME - 1).expire(key, KNOWN_FOR_S).execute()


@dataclass(frozen=True)
class Attempt:
    """One sign-in try: the name, where it comes from, and whether that is a place the owner signs in from
    (`trusted`: counted on its own, and exempt from the address limit)."""

    name: str
    bucket: str
    trusted: bool

    @classmethod
    def of(cls, name: str, address: str, signed_in_as_name: bool = False) -> Attempt:
        bucket = address_bucket(address)
        return cls(name, bucket, signed_in_as_name or knows(name, bucket))

    @property
    def scope(self) -> str:
        return self.bucket if self.trusted else ELSEWHERE

    def claim(self) -> int:
        """Seconds to wait before this try may run (0: it may, and it is counted as wrong until `succeeded`)."""
        keys = (_counts_key(self.name), _address_key(self.bucket))
        limits = (FREE_FAILS, MAX_DELAY_S, ADDRESS_FAILS, ADDRESS_WINDOW_S, NAME_MEMORY_S)
        return int(get_redis().eval(_CLAIM, len(keys), *keys, time.time(), self.scope, int(self.trusted), *limits))

    def withdraw(self) -> None:
        """Take back a claimed try that never ran (no hash slot was free)."""
        with get_redis().pipeline() as pipe:
            pipe.hincrby(_counts_key(self.name), "n:" + self.scope, -1)
            if not self.trusted:
                pipe.decr(_address_key(self.bucket))
            pipe.execute()

    def succeeded(self) -> None:
        """The password was right: not a wrong one after all, and this address is now known for the name.
        An owner's own address starts again from nothing; the count of everywhere else stays, so signing
        in never hands the guessers their free tries back."""
        self.withdraw()
        if self.trusted:
            get_redis().hdel(_counts_key(self.name), "n:" + self.scope, "t:" + self.scope)
        remember(self.name, self.bucket)


def clear(name: str) -> bool:
    """Forget every wrong password counted against `name`; True if there were any."""
    return bool(get_redis().delete(_counts_key(name)))


def forget_addresses(name: str) -> None:
    """A new password: the addresses that knew the old one are trusted no more."""
    get_redis().delete(_known_key(name))
