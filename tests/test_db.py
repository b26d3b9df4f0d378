"""The connection pool against the real Postgres: connections are reused, dead ones replaced."""

from __future__ import annotations

import select

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
    pool = db.ConnectionPool(db.get_settings().database_url)
    conn = pool.get()
    victim = pid_of(conn)
    conn.rollback()
    pool.put(conn)
    with psycopg2.connect(db.get_settings().database_url) as admin, admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (victim,))
    admin.close()
    assert select.select([conn], [], [], 5)[0]  # the server's goodbye has reached the idle socket
    replacement = pool.get()  # no error for the caller: the checkout saw the hang-up, no ping needed
    try:
        assert pid_of(replacement) != victim and conn.closed
    finally:
        replacement.close()


def test_a_live_idle_connection_is_handed_out_again(database):
    pool = db.ConnectionPool(db.get_settings().database_url)
    conn = pool.get()
    conn.rollback()
    pool.put(conn)
    try:
        assert pool.get() is conn
    finally:
        conn.close()


def test_a_connection_broken_mid_transaction_is_dropped_not_pooled(database):
    victim = backend_pid()
    with pytest.raises(psycopg2.OperationalError), db.transaction() as cur:
        cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert backend_pid() != victim


def test_autocommit_runs_several_statements_as_one_transaction(database):
    with db.transaction() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS probe (n int PRIMARY KEY)")
        cur.execute("TRUNCATE probe")
    with db.autocommit() as cur:
        cur.execute("INSERT INTO probe VALUES (1); INSERT INTO probe VALUES (2)")
    with pytest.raises(psycopg2.errors.UniqueViolation), db.autocommit() as cur:
        cur.execute("INSERT INTO probe VALUES (3); INSERT INTO probe VALUES (1)")  # all or nothing
    with db.transaction() as cur:  # the pooled connection is back to explicit transactions
        cur.execute("SELECT array_agg(n ORDER BY n) AS ns FROM probe")
        assert cur.fetchone()["ns"] == [1, 2]
        assert cur.connection.autocommit is False
        cur.execute("DROP TABLE probe")


def test_a_failed_statement_leaves_the_pool_usable(database):
    before = backend_pid()
    with pytest.raises(psycopg2.errors.UndefinedTable), db.transaction() as cur:
        cur.execute("SELECT * FROM no_such_table")
    assert backend_pid() == before  # rolled back and pooled again: the same connection answers


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

    from cvunet_matting.db import reads, writes

    batch_id = uuid.uuid4()
    with db.transaction() as cur:
        writes.create_batch(cur, batch_id, "test", 4, {}, "outputs/x", chunks=2)
        first = writes.claim_chunk(cur, batch_id)
        outcomes = [writes.complete_chunk(cur, batch_id, first) for _ in range(2)]
        # Chunk 0 done, chunk 1 queued and none dispatched: reconcile must see the chain broken.
        stalled = [row["id"] for row in reads.undispatched_batches(cur)]
        second = writes.claim_chunk(cur, batch_id)
        after_claim = [row["id"] for row in reads.undispatched_batches(cur)]
        last = writes.complete_chunk(cur, batch_id, second)
    assert outcomes == ["more", "already"]  # a repeated callback dispatches nothing more
    assert batch_id in stalled and batch_id not in after_claim
    assert (first, second, last) == (0, 1, "last")


class _Undo(Exception):
    """Rolls the test's transaction back: the schema change it makes is undone whatever happens."""


def test_migration_014_applies_on_a_database_with_a_chunk_in_flight(database):
    """Upgraded while a batch runs: its chunk claimed before the upgrade has no dispatch time and counts as
    published (reconcile compares its rows with Redis as before); a chunk claimed after records its own."""
    import uuid

    from cvunet_matting.db import reads, schema, writes

    batch_id = uuid.uuid4()
    row = {"id": uuid.uuid4(), "batch_id": batch_id, "chunk": 0, "filename": "a.png", "input_key": "k"}
    row |= {"options": {}, "output_path": "o/a.png"}
    with pytest.raises(_Undo), db.transaction() as cur:
        cur.execute("ALTER TABLE chunks DROP COLUMN dispatched_at, DROP COLUMN published_at")  # as before 014
        writes.create_batch(cur, batch_id, "test", 2, {}, "o", chunks=2)
        writes.create_tasks(cur, [row])
        cur.execute("UPDATE chunks SET state = 'dispatched' WHERE batch_id = %s AND idx = 0", (batch_id,))
        cur.execute("UPDATE tasks SET event_at = now() - interval '1 minute' WHERE id = %s", (row["id"],))
        cur.execute(dict(schema.migrations())[14])
        cur.execute("SELECT * FROM chunks WHERE batch_id = %s AND idx = 0", (batch_id,))
        before = {"batch_id": batch_id, "idx": 0, "state": "dispatched"}
        assert cur.fetchone() == before | {"dispatched_at": None, "published_at": None}
        assert reads.unfinished_ids(cur, settle_s=2) == {str(row["id"])}
        assert writes.claim_chunk(cur, batch_id) == 1
        cur.execute("SELECT dispatched_at FROM chunks WHERE batch_id = %s AND idx = 1", (batch_id,))
        assert cur.fetchone()["dispatched_at"] is not None
        raise _Undo
