"""The connection pool against the real Postgres: connections are reused, dead ones replaced."""

from __future__ import annotations

import psycopg2
import pytest

from cvunet_matting import db


def backend_pid() -> int:
    with db.transaction() as cur:
        cur.execute("SELECT pg_backend_pid() AS pid")
        return cur.fetchone()["pid"]


def test_transactions_reuse_one_connection(database):
    first = backend_pid()
    assert [backend_pid() for _ in range(5)] == [first] * 5


def pid_of(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def test_an_idle_connection_killed_by_the_server_is_replaced(database):
    pool = db.ConnectionPool(db.get_settings().database_url, ping_after=0)
    conn = pool.get()
    victim = pid_of(conn)
    conn.rollback()
    pool.put(conn)
    with psycopg2.connect(db.get_settings().database_url) as admin, admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (victim,))
    admin.close()
    replacement = pool.get()  # no error for the caller: the checkout ping noticed the dead link
    try:
        assert pid_of(replacement) != victim and conn.closed
    finally:
        replacement.close()


def test_a_broken_connection_is_dropped_not_pooled(database):
    victim = backend_pid()
    with psycopg2.connect(db.get_settings().database_url) as admin, admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (victim,))
    admin.close()
    # Used moments ago, so trusted without a ping: this caller sees the error ...
    with pytest.raises(psycopg2.OperationalError):
        backend_pid()
    assert backend_pid() != victim  # ... and the next one gets a fresh connection


def test_a_failed_statement_leaves_the_pool_usable(database):
    with pytest.raises(psycopg2.errors.UndefinedTable), db.transaction() as cur:
        cur.execute("SELECT * FROM no_such_table")
    assert backend_pid() > 0


def test_idle_connections_are_capped(database):
    pool = db.ConnectionPool(db.get_settings().database_url, keep=2)
    conns = [pool.get() for _ in range(4)]
    for conn in conns:
        pool.put(conn)
    try:
        assert sum(conn.closed == 0 for conn in conns) == 2
        again = pool.get()
        assert again in conns[:2]
        again.close()
    finally:
        pool.close_all()


def test_chunk_completion_counts_once(database):
    import uuid

    from cvunet_matting import jobs, queries

    batch_id = uuid.uuid4()
    with db.transaction() as cur:
        jobs.create_batch(cur, batch_id, "test", 4, {}, "outputs/x", chunks=2)
        first = jobs.claim_chunk(cur, batch_id)
        outcomes = [jobs.complete_chunk(cur, batch_id, first) for _ in range(2)]
        # Chunk 0 done, chunk 1 queued and none dispatched: reconcile must see the chain broken.
        stalled = [row["id"] for row in queries.undispatched_batches(cur)]
        second = jobs.claim_chunk(cur, batch_id)
        after_claim = [row["id"] for row in queries.undispatched_batches(cur)]
        last = jobs.complete_chunk(cur, batch_id, second)
    assert outcomes == ["more", "already"]  # a repeated callback dispatches nothing more
    assert batch_id in stalled and batch_id not in after_claim
    assert (first, second, last) == (0, 1, "last")
