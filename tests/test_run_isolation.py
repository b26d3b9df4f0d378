"""A test run killed by hand leaves nothing that a later run trips over (tests/support/owners.py)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess

import psycopg2
import pytest

from tests import support
from tests.support import owners


def dead_identity() -> str:
    proc = subprocess.Popen(["sleep", "30"])
    identity = owners.identity(proc.pid)
    proc.kill()
    proc.wait()
    return identity


def sleeper(owner: str) -> subprocess.Popen:
    return subprocess.Popen(["sleep", "60"], env={**os.environ, owners.OWNER_VAR: owner})


def test_an_identity_is_alive_only_while_its_process_is():
    assert owners.alive(owners.identity(os.getpid()))
    assert not owners.alive(dead_identity())
    assert not owners.alive("not-a-pid")


def test_a_dead_runs_processes_are_killed_and_a_live_runs_are_not():
    orphan = sleeper(dead_identity())
    kept = sleeper(owners.identity(os.getpid()))
    try:
        support.wait_until(lambda: orphan.pid in owners.orphans(), timeout=5, message="the orphan is never seen")
        assert orphan.pid in owners.reap()
        assert orphan.wait(timeout=5) == -signal.SIGKILL
        assert kept.poll() is None
    finally:
        for proc in (orphan, kept):
            proc.kill()
            proc.wait()


def database_exists(name: str) -> bool:
    conn = psycopg2.connect(support.ADMIN_DSN)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            return cur.fetchone() is not None
    finally:
        conn.close()


@pytest.mark.services  # claims and releases databases on the shared servers itself
def test_a_dead_runs_databases_are_emptied_and_its_lock_released():
    dead_run, run = secrets.token_hex(4), secrets.token_hex(4)
    dead_pg = f"cvunet_test_dead_{dead_run}"
    claim = json.dumps({"run": dead_run, "owner": dead_identity(), "pg": dead_pg})
    number = next((n for n in range(1, 16) if support.redis(0).set(f"cvunet-test:db:{n}", claim, nx=True)), None)
    if number is None:
        pytest.skip("every Redis database is claimed by a live run")
    support.create_database(dead_pg)
    support.redis(number).set("left-by-the-dead-run", 1)
    mine = support.claim_redis_db(run, f"cvunet_test_{run}")
    try:
        assert support.redis(number).get("left-by-the-dead-run") is None
        assert not database_exists(dead_pg)
        lock = support.redis(0).get(f"cvunet-test:db:{number}")
        assert lock is None or json.loads(lock)["run"] != dead_run
    finally:
        support.release_redis_db(mine, run)
        support.drop_database(dead_pg)
    assert support.redis(0).get(f"cvunet-test:db:{mine}") is None
