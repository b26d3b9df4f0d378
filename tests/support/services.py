"""The shared Redis and Postgres servers: a Redis database and a Postgres database per test run."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import psycopg2
import redis as redis_lib

from . import owners

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parents[2]


def redis(db: int | None = None) -> redis_lib.Redis:
    """Database `db` of the shared server, or by default this run's: CVUNET_REDIS_URL as it is, which
    in a run that claimed no database leads nowhere (tests/conftest.py), never to the locks in db 0."""
    if db is None:
        return redis_lib.Redis.from_url(os.environ["CVUNET_REDIS_URL"])
    return redis_lib.Redis(host="127.0.0.1", port=6379, db=db)


LOCK_TTL_S = 3 * 3600  # a lock outlives any run; one whose owner is gone is taken over sooner


LOCK_TTL_S = 3 * 3600  # a lock outlives any run; one whose owner is gone is released sooner


def _lock_key(number: int) -> str:
    return f"cvunet-test:db:{number}"


def claim_redis_db(run_id: str, pg_name: str) -> int:
    """A Redis database number no live test run or benchmark holds (locks kept in db 0).

    From here on, every process this one starts is marked as the run's (owners.py). What killed runs
    left behind goes first: their processes, their Redis databases and their Postgres databases.
    """
    owners.reap()
    claim = json.dumps({"run": run_id, "owner": owners.own_children(), "pg": pg_name})
    lock = redis(0)
    for number in range(1, 16):
        stale = _take_over(lock, number, claim)
        if stale is not None:
            drop_database(stale["pg"])
            release_redis_db(number, run_id)
    for number in range(1, 16):
        if lock.set(_lock_key(number), claim, nx=True, ex=LOCK_TTL_S):
            return number
    raise RuntimeError("all Redis databases 1-15 are claimed by other test runs")


def _claim_of(value: bytes | None) -> dict | None:
    try:
        claim = json.loads(value) if value else None
    except ValueError:  # a lock written before claims named their owner
        return None
    return claim if isinstance(claim, dict) else None


def _take_over(lock: redis_lib.Redis, number: int, claim: str) -> dict | None:
    """Swap a dead run's lock for ours, atomically, and return its claim: two runs may find the same
    one dead at once, and only the one that holds the lock may empty the database."""
    with lock.pipeline() as pipe:
        try:
            pipe.watch(_lock_key(number))
            stale = _claim_of(pipe.get(_lock_key(number)))
            if stale is None or owners.alive(stale["owner"]):
                return None
            pipe.multi()
            pipe.set(_lock_key(number), claim, ex=LOCK_TTL_S)
            pipe.execute()
        except redis_lib.WatchError:
            return None
    return stale


def release_redis_db(number: int, run_id: str) -> None:
    claim = _claim_of(redis(0).get(_lock_key(number)))
    if claim is not None and claim["run"] == run_id:
        redis(number).flushdb()
        redis(0).delete(_lock_key(number))


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
