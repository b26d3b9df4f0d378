"""PostgreSQL access: one connection pool per process (`reads`, `writes` and `schema` beside it)."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg2
import psycopg2.extras

from cvunet_matting.config import get_settings

psycopg2.extras.register_uuid()

IDLE_KEPT = 4  # idle connections a process keeps; gunicorn runs 4 threads, a worker 2


class ConnectionPool:
    """Connections opened on demand and kept for reuse, up to `keep` of them idle.

    psycopg2's own pools close every returned connection beyond `minconn` and open `minconn` at
    once: with minconn 0 each transaction paid a fresh connection (about 10 ms, the bulk of a task's
    overhead). Every checkout looks at the idle connection's socket, so one killed by a database
    restart is replaced instead of failing the caller, without the round trip a ping would cost.
    """

    def __init__(self, url: str, keep: int = IDLE_KEPT):
        self.url = url
        self.keep = keep
        self._idle: list[psycopg2.extensions.connection] = []
        self._lock = threading.Lock()

    def get(self) -> psycopg2.extensions.connection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return psycopg2.connect(self.url, connect_timeout=5, application_name="cvunet-matting")
            if _alive(conn):
                return conn
            conn.close()

    def put(self, conn: psycopg2.extensions.connection, discard: bool = False) -> None:
        reusable = not discard and conn.closed == 0 and conn.status == psycopg2.extensions.STATUS_READY
        with self._lock:
            if reusable and len(self._idle) < self.keep:
                self._idle.append(conn)
                return
        conn.close()

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _alive(conn: psycopg2.extensions.connection) -> bool:
    """True unless the server hung up, seen without a round trip: an idle connection (we never
    LISTEN) has nothing to read, while a server that ends it sends a FATAL message and closes."""
    if conn.closed:
        return False
    try:
        readable, _, _ = select.select([conn], [], [], 0)
    except (OSError, ValueError):  # the socket itself is gone
        return False
    return not readable


_pool: ConnectionPool | None = None
_pool_pid: int | None = None
_lock = threading.Lock()


def get_pool() -> ConnectionPool:
    """The process's pool, made on first use and again after a fork (sockets must not be shared)."""
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ConnectionPool(get_settings().database_url)
            _pool_pid = os.getpid()
        return _pool


def close_pool() -> None:
    global _pool
    with _lock:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.close_all()
        _pool = None


@contextmanager
def transaction() -> Iterator[psycopg2.extensions.cursor]:
    """A cursor in a transaction: committed on success, rolled back (and a broken link dropped) on error."""
    pool = get_pool()
    conn = pool.get()
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            yield cur
        conn.commit()
    except BaseException:
        # A link that broke mid-transaction cannot roll back: put() below drops it.
        with suppress(psycopg2.Error):
            if not conn.closed:
                conn.rollback()
        raise
    finally:
        pool.put(conn)


@contextmanager
def autocommit() -> Iterator[psycopg2.extensions.cursor]:
    """A cursor whose every execute commits on its own, in one round trip (no BEGIN, no COMMIT).

    A query string of several statements runs as one implicit transaction: all of them or none.
    """
    pool = get_pool()
    conn = pool.get()
    try:
        conn.autocommit = True
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            yield cur
    finally:
        with suppress(psycopg2.Error):  # a link that broke is closed: put() drops it
            if not conn.closed:
                conn.autocommit = False
        pool.put(conn)


def ping() -> bool:
    try:
        with transaction() as cur:
            cur.execute("SELECT 1")
        return True
    except psycopg2.Error:
        return False
