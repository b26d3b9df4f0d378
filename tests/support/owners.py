"""Which test run started a process, so that a later run can stop what a killed run left behind.

A test run or benchmark killed by hand never tears down its fixtures: its Celery workers, web servers
and Traefik keep running, still attached to its Redis database, which a later run may claim. Every
process a run starts inherits OWNER_VAR, the run's pid and start time; a later run finds the
processes whose owner is gone and kills them before it claims a database.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

OWNER_VAR = "CVUNET_TEST_OWNER"
PROC = Path("/proc")


def identity(pid: int) -> str | None:
    """`pid:start time`: a pid alone may belong to another process by the time anyone looks."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which may hold spaces, end with ')'; start time is field 22.
    return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"


def alive(owner: str) -> bool:
    pid, _, _ = owner.partition(":")
    return pid.isdigit() and identity(int(pid)) == owner


def own_children() -> str:
    """Mark every process this one starts from now on as its own."""
    owner = identity(os.getpid())
    os.environ[OWNER_VAR] = owner
    return owner


def _owner_of(pid_dir: Path) -> str | None:
    try:
        environ = (pid_dir / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return None
    prefix = f"{OWNER_VAR}=".encode()
    for variable in environ.split(b"\0"):
        if variable.startswith(prefix):
            return variable[len(prefix) :].decode()
    return None


def orphans() -> list[int]:
    """Processes started by a test run that is no longer running."""
    found = []
    for pid_dir in PROC.iterdir():
        if pid_dir.name.isdigit() and int(pid_dir.name) != os.getpid():
            owner = _owner_of(pid_dir)
            if owner is not None and not alive(owner):
                found.append(int(pid_dir.name))
    return found


def reap() -> list[int]:
    """Kill every orphan of a dead test run; returns their pids."""
    killed = orphans()
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return killed
