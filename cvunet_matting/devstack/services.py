"""Bring up the machine's Redis and PostgreSQL for a one-machine stack when they are not running.

Anything that stops it (a tool not installed, no cluster, a server that refuses the login) is a
ServiceError whose message says in one line what to install or set: `make run` on a fresh machine
shows that line, never a traceback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import ParseResult, urlparse

import psycopg2
import redis

from cvunet_matting.errors import one_line

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# Where Debian's postgresql-common keeps its clusters (one folder per major version).
CLUSTERS = Path("/etc/postgresql")
INSTALL_REDIS = "install Redis (Debian: apt-get install redis-server) or set CVUNET_REDIS_URL to a running one"
INSTALL_POSTGRES = "install PostgreSQL (Debian: apt-get install postgresql) or set CVUNET_DATABASE_URL to a running one"


class ServiceError(RuntimeError):
    """Redis or PostgreSQL cannot be had; the message says what to do about it, in one line."""


def ensure_redis(url: str) -> None:
    """Redis answering at `url`: started here (no persistence) when it is local and down."""
    parsed = urlparse(url)
    problem = _redis_problem(url)
    if problem is None:
        return
    where = _address(parsed, 6379)
    if parsed.hostname not in LOCAL_HOSTS or _listening(parsed, 6379):
        # Another machine's, or a local one that wants a password or TLS: not ours to start.
        raise ServiceError(f"Redis at {where} is not usable ({problem}): check CVUNET_REDIS_URL")
    server = _tool("redis-server", INSTALL_REDIS)
    port = str(parsed.port or 6379)
    argv = [server, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no"]
    _start(argv, f"Redis at {where}")
    _wait(lambda: _redis_problem(url) is None, f"Redis at {where}")


def ensure_postgres(url: str, clusters: Path = CLUSTERS) -> None:
    """Start the local cluster if needed (Debian's pg_ctlcluster), then create the configured database
    if missing. `clusters`: where Debian keeps the clusters' configurations."""
    parsed = urlparse(url)
    admin = parsed._replace(path="/postgres").geturl()
    problem = _postgres_problem(admin)
    if problem is not None:
        where = _address(parsed, 5432)
        if parsed.hostname not in LOCAL_HOSTS:
            raise ServiceError(f"PostgreSQL at {where} is not usable ({problem}): check CVUNET_DATABASE_URL")
        if _listening(parsed, 5432):  # up, but the login fails (a password, pg_hba.conf) or it is not PostgreSQL
            raise ServiceError(
                f"PostgreSQL at {where} does not let us in ({problem}): set the user and password in "
                "CVUNET_DATABASE_URL, or let local connections in (pg_hba.conf)"
            )
        _start(cluster_start_argv(clusters), f"PostgreSQL at {where}")
        _wait(lambda: _postgres_problem(admin) is None, f"PostgreSQL at {where}")
    _create_database(admin, parsed.path.lstrip("/"))


def cluster_start_argv(clusters: Path) -> list[str]:
    """The command that starts the newest cluster Debian's postgresql-common knows of."""
    versions = sorted((p.name for p in clusters.iterdir() if p.is_dir()), key=_version) if clusters.is_dir() else []
    if not versions:
        raise ServiceError(f"no PostgreSQL cluster in {clusters}: {INSTALL_POSTGRES}")
    ctl = _tool("pg_ctlcluster", INSTALL_POSTGRES)
    return [ctl, "--skip-systemctl-redirect", versions[-1], "main", "start"]


def _create_database(admin: str, name: str) -> None:
    conn = psycopg2.connect(admin, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def _postgres_problem(url: str) -> str | None:
    """None when PostgreSQL lets us in at `url`, else why not, in one line (no password in it)."""
    try:
        psycopg2.connect(url, connect_timeout=2).close()
    except psycopg2.OperationalError as exc:
        return one_line(exc)
    return None


def _redis_problem(url: str) -> str | None:
    """None when Redis answers a PING at `url`, else why not, in one line."""
    try:
        redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError as exc:
        return one_line(exc)
    return None


def _listening(parsed: ParseResult, default_port: int) -> bool:
    """Whether something accepts TCP connections at the URL's host and port (whoever it is)."""
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1).close()
    except OSError:
        return False
    return True


def _tool(name: str, install: str) -> str:
    """The path of a program on PATH, or a ServiceError saying what to install."""
    path = shutil.which(name)
    if path is None:
        raise ServiceError(f"{name} not found: {install}")
    return path


def _start(argv: list[str], what: str) -> None:
    """Run a starting command; its own complaint (stderr) stays on the terminal above our one line."""
    try:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as exc:
        raise ServiceError(f"{what} did not start: {Path(argv[0]).name} exited with status {exc.returncode}") from exc


def _version(name: str) -> tuple[int, ...]:
    """A cluster folder's major version as numbers: 9.6 before 15 (sorted as text, 15 came first)."""
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _address(parsed: ParseResult, default_port: int) -> str:
    return f"{parsed.hostname}:{parsed.port or default_port}"


def _wait(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise ServiceError(f"{what} did not start within {timeout:.0f}s")
