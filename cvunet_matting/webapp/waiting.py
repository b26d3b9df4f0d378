"""Hold a status request until its task or batch changes or ends: woken by Redis pub/sub, not a sleep loop.

One subscriber thread per web process pattern-subscribes to the channels in notify.PATTERNS and sets
the event of every request watching an id a message names. A watching request holds one of the
process's gunicorn threads, so there are `slots` of them per process at most (the rest are kept
for ordinary requests); one more is refused with 429 and Retry-After (see replies). One user holds at
most CVUNET_WAITS_PER_USER of them, all processes together (user_limits.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TypeVar

import redis
from werkzeug.exceptions import TooManyRequests

from cvunet_matting.pipeline.notify import PATTERNS, ids_in

log = logging.getLogger(__name__)
Value = TypeVar("Value")  # what a waiter reads and compares: a row, a batch view

MAX_WAIT_S = 30.0  # the longest a request is held: below every proxy's idle timeout
RECHECK_S = 5.0  # re-read this often anyway: a task ended by the watchdog publishes nothing
# After an end is announced, the row may lag: the worker commits it in the background while Celery
# stores (and publishes) the result. Milliseconds usually; on a loaded host more than 0.4 s once in
# eight (bench-latency: that answer then waited for the 5 s re-check), so re-read for some 3 s.
SETTLE_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5)
DEFAULT_SLOTS = 24
NO_PLACE = contextlib.nullcontext()  # nothing more to hold while waiting (reusable: it holds no state)


class Watch:
    """One waiting request: its event is set when a message names one of its ids."""

    def __init__(self):
        self.event = threading.Event()
        self.ended = False  # the message announced a task's end

    def wait(self, timeout: float) -> bool:
        """Sleep until woken or `timeout`; True when woken by an end (the event is cleared again)."""
        woken = self.event.wait(timeout)
        self.event.clear()
        ended, self.ended = self.ended, False
        return woken and ended


class Hub:
    """The process's subscriber thread and the requests watching ids through it."""

    def __init__(self, redis_url: str, slots: int = DEFAULT_SLOTS):
        self.redis_url, self.slots = redis_url, slots
        self.listening = threading.Event()
        self.closing = threading.Event()
        _HUBS.add(self)
        self._watches: dict[str, set[Watch]] = {}
        self._held = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    @property
    def held(self) -> int:
        return self._held

    @contextlib.contextmanager
    def watch(self, *ids: str) -> Iterator[Watch]:
        """Watch `ids` for the block's duration; TooManyRequests when every slot is taken."""
        watch = Watch()
        with self._lock:
            if self._held >= self.slots:
                raise TooManyRequests(
                    f"{self.slots} requests are already waiting here: poll instead, or wait again shortly",
                    retry_after=1,
                )
            self._held += 1
            for key in ids:
                self._watches.setdefault(key, set()).add(watch)
        try:
            self._start()
            yield watch
        finally:
            with self._lock:
                self._held -= 1
                for key in ids:
                    watchers = self._watches.get(key, set())
                    watchers.discard(watch)
                    if not watchers:
                        self._watches.pop(key, None)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid, self.listening = os.getpid(), threading.Event()
                self._thread = threading.Thread(target=self._listen, name="wait-hub", daemon=True)
                self._thread.start()
        # Subscribed before the first read, or an end published in between would be missed.
        self.listening.wait(1.0)

    def _listen(self) -> None:
        while True:
            try:
                client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=5, health_check_interval=15)
                with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.psubscribe(*PATTERNS)
                    self.listening.set()
                    while True:
                        message = pubsub.get_message(timeout=RECHECK_S)
                        if message and message["type"] == "pmessage":
                            self.dispatch(message["channel"].decode(), message["data"])
            except (redis.RedisError, OSError) as exc:
                log.warning("the wait hub lost Redis, reconnecting: %s", exc)
            self.listening.clear()
            self._wake_all()
            time.sleep(1.0)

    def dispatch(self, channel: str, data: bytes | str) -> None:
        ids, final = ids_in(channel, data)
        with self._lock:
            for key in ids:
                for watch in self._watches.get(key, ()):
                    watch.ended = watch.ended or final
                    watch.event.set()

    def _wake_all(self) -> None:
        with self._lock:
            for watches in self._watches.values():
                for watch in watches:
                    watch.event.set()

    def close(self) -> None:
        """The process is stopping: every held request answers now with what it has, and none waits from
        here on. Otherwise each would hold the process's graceful shutdown for up to MAX_WAIT_S (longer
        than gunicorn's graceful timeout allows, so cut off unanswered); the page asks again, elsewhere."""
        self.closing.set()
        self._wake_all()


_HUBS: weakref.WeakSet[Hub] = weakref.WeakSet()


def close_all() -> None:
    """Close every hub of this process (gunicorn_conf calls it when a worker is told to stop)."""
    for hub in list(_HUBS):
        hub.close()


def changes(
    hub: Hub,
    ids: tuple[str, ...],
    read: Callable[[], Value],
    final: Callable[[Value], bool],
    seconds: float,
    place: contextlib.AbstractContextManager = NO_PLACE,
) -> Iterator[Value]:
    """read() now, then again whenever it changes, until final() or `seconds` have passed. `place`: held
    for as long, taken before the process's slot (the asking user's place, user_limits.wait_place).

    Woken by an end that the row does not show yet, it re-reads a few times over SETTLE_S."""
    deadline = time.monotonic() + seconds
    with place, hub.watch(*ids) as watch:
        value = read()
        yield value
        while not final(value) and not hub.closing.is_set() and (left := deadline - time.monotonic()) > 0:
            ended = watch.wait(min(left, RECHECK_S))
            new = read()
            for pause in SETTLE_S if ended and new == value else ():
                time.sleep(pause)
                if (new := read()) != value:
                    break
            if new != value:
                value = new
                yield value


def hold(
    hub: Hub,
    ids: tuple[str, ...],
    read: Callable[[], Value],
    final: Callable[[Value], bool],
    seconds: float,
    place: contextlib.AbstractContextManager = NO_PLACE,
) -> Value:
    """The value once final, or as it is after `seconds`."""
    values = changes(hub, ids, read, final, seconds, place)
    value = next(values)
    for value in values:  # noqa: B007 (the last one is the answer)
        pass
    return value
