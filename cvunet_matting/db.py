"""PostgreSQL access: one connection pool per process, and versioned schema upgrades."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import psycopg2
import psycopg2.extras
import psycopg2.pool

from .config import get_settings

psycopg2.extras.register_uuid()

_pool: psycopg2.pool.ThreadedConnectionPool | None = None
_pool_pid: int | None = None
_lock = threading.Lock()


def get_pool(url: str | None = None) -> psycopg2.pool.ThreadedConnectionPool:
    """The process's pool, made on first use and again after a fork (sockets must not be shared)."""
    global _pool, _pool_pid
    import os

    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = psycopg2.pool.ThreadedConnectionPool(
                0, 8, url or get_settings().database_url, connect_timeout=5, application_name="cvunet-matting"
            )
            _pool_pid = os.getpid()
        return _pool


def close_pool() -> None:
    global _pool
    with _lock:
        if _pool is not None:
            _pool.closeall()
        _pool = None


@contextmanager
def transaction() -> Iterator[psycopg2.extensions.cursor]:
    """A cursor in a transaction: committed on success, rolled back (and a broken link dropped) on error."""
    pool = get_pool()
    conn = pool.getconn()
    broken = False
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            yield cur
        conn.commit()
    except psycopg2.Error:
        broken = conn.closed != 0
        if not broken:
            conn.rollback()
        raise
    except BaseException:
        conn.rollback()
        raise
    finally:
        pool.putconn(conn, close=broken or conn.closed != 0)


def migrations() -> list[tuple[int, str]]:
    """(version, sql) for every packaged migrations/NNN_name.sql, in order."""
    found = []
    for entry in resources.files("cvunet_matting").joinpath("migrations").iterdir():
        match = re.match(r"(\d+)_.*\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text()))
    return sorted(found)


def upgrade() -> list[int]:
    """Apply the migrations not yet applied, each in its own transaction; returns those applied."""
    applied = []
    with transaction() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
    for version, sql in migrations():
        with transaction() as cur:
            # An advisory lock: two hosts upgrading at once apply each migration once.
            cur.execute("SELECT pg_advisory_xact_lock(7311)")
            cur.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,))
            if cur.fetchone():
                continue
            cur.execute(sql)
            cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied


def ping() -> bool:
    try:
        with transaction() as cur:
            cur.execute("SELECT 1")
        return True
    except psycopg2.Error:
        return False
