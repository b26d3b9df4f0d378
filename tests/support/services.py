"""The shared Redis and Postgres servers: a Redis database and a Postgres database per test run."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psycopg2
import redis as redis_lib

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parents[2]


def redis(db: int | None = None) -> redis_lib.Redis:
    if db is None:
        db = int(os.environ["CVUNET_REDIS_URL"].rsplit("/", 1)[1])
    return redis_lib.Redis(host="127.0.0.1", port=6379, db=db)


def claim_redis_db(run_id: str) -> int:
    """A Redis database number no other concurrent test run holds (locks kept in db 0)."""
    lock = redis(0)
    for number in range(1, 16):
        if lock.set(f"cvunet-test:db:{number}", run_id, nx=True, ex=3 * 3600):
            return number
    raise RuntimeError("all Redis databases 1-15 are claimed by other test runs")


def release_redis_db(number: int, run_id: str) -> None:
    if redis(0).get(f"cvunet-test:db:{number}") == run_id.encode():
        redis(number).flushdb()
        redis(0).delete(f"cvunet-test:db:{number}")


def _admin(sql: str) -> None:
    conn = psycopg2.connect(ADMIN_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def create_database(name: str) -> None:
    _admin(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with contextlib.suppress(psycopg2.Error):
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
