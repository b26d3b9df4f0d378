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


def test_a_connection_killed_by_the_server_is_replaced(database):
    victim = backend_pid()
    with psycopg2.connect(db.get_settings().database_url) as admin, admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (victim,))
    admin.close()
    replacement = backend_pid()  # no error for the caller: the checkout ping noticed the dead link
    assert replacement != victim


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
