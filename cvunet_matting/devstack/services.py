"""Bring up the machine's Redis and PostgreSQL for a one-machine stack when they are not running."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg2
import redis


def redis_up(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def ensure_redis(url: str) -> None:
    if redis_up(url):
        return
    parsed = urlparse(url)
    if parsed.hostname not in {"127.0.0.1", "localhost"}:
        raise RuntimeError(f"Redis at {parsed.hostname} is not reachable")
    subprocess.run(
        [
            "redis-server",
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(parsed.port or 6379),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
    )
    _wait(lambda: redis_up(url), "Redis")


def ensure_postgres(url: str) -> None:
    """Start the local cluster if needed, then create the configured database if missing."""
    parsed = urlparse(url)
    admin = parsed._replace(path="/postgres").geturl()
    if not _pg_up(admin):
        if parsed.hostname not in {"127.0.0.1", "localhost"}:
            raise RuntimeError(f"PostgreSQL at {parsed.hostname} is not reachable")
        version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"], check=True)
        _wait(lambda: _pg_up(admin), "PostgreSQL")
    name = parsed.path.lstrip("/")
    conn = psycopg2.connect(admin, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def _pg_up(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=2).close()
        return True
    except psycopg2.OperationalError:
        return False


def _wait(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not start within {timeout}s")
