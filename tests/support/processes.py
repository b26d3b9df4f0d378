"""Real worker and CLI processes, each in its own process group so a kill reaches its children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis as redis_lib

from .services import REPO
from .waiting import wait_until

BOTH_QUEUES = "matting,bookkeeping"


def start_worker(
    name: str, log_dir: Path, env: dict, queues: str = BOTH_QUEUES, args: tuple[str, ...] = ()
) -> subprocess.Popen:
    """A real Celery worker (prefork, concurrency 1) in its own process group.

    By default it serves the bookkeeping queue too: one process per test instead of two, where the
    split is not under test (test_workers.py runs them apart, as `cvunet-matting worker` does). `args`
    go after the supervisor's own (e.g. `--prefetch-multiplier`)."""
    from cvunet_matting.worker.supervisor import WorkerSpec, command

    log_dir.mkdir(parents=True, exist_ok=True)
    spec = WorkerSpec(name, {"CVUNET_DEVICE": "cpu", **env})
    log_path = log_dir / f"{name.split('@')[0]}-{time.time_ns()}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*command(spec, queues, "INFO"), *args],
            cwd=REPO,
            env={**os.environ, **spec.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log_path = log_path
    try:
        wait_until(lambda: _pinged(name), 60, message=f"worker {name} did not come up ({log_path})")
    except AssertionError:
        kill_group(proc)
        raise
    return proc


def _pinged(name: str) -> bool:
    from cvunet_matting.celery_app import app

    try:
        replies = app.control.inspect(timeout=0.5).ping() or {}
    except (redis_lib.RedisError, OSError):  # a pooled link to a Redis that was restarted: next try
        return False
    prefix = name.split("@")[0] + "@"
    return any(node.startswith(prefix) for node in replies)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_cli(*args: str, env: dict | None = None, timeout: float = 120, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cvunet_matting.commands.cli", *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=timeout,
    )
