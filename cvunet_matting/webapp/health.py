"""Liveness (/healthz: the process answers) and readiness (/readyz: Redis, Postgres and a worker)."""

from __future__ import annotations

import logging
import threading
import time

from flask import Blueprint, current_app, jsonify

from cvunet_matting import db
from cvunet_matting.storage.redis_client import get_redis

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)
PROBE = "cvunet.worker_probe"


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


def redis_ok() -> bool:
    try:
        return bool(get_redis().ping())
    except Exception as exc:  # any failure to reach Redis means "not ready", never a 500
        log.warning("readiness: redis: %s", exc)
        return False


def ping_workers() -> int:
    """How many Celery workers answer a broadcast ping within a second."""
    from cvunet_matting.celery_app import app

    try:
        return len(app.control.inspect(timeout=1).ping() or {})
    except Exception as exc:
        log.warning("readiness: worker ping: %s", exc)
        return 0


NONE_CACHE_SECONDS = 1.0
FIRST_PROBE_WAIT_S = 5.0  # a process's first answer waits for its first probe (a broadcast waits 1 s)


class WorkerProbe:
    """The worker count, asked by one broadcast at a time and kept READY_CACHE_SECONDS.

    A broadcast waits a whole second for replies: while one is under way every other caller answers at
    once with the last count (or, before there is any, waits for that same probe, side by side): callers
    never queue one broadcast behind another, and no lock is held across one. "None" is asked again after
    a second at most: a stack starting up is ready when its first worker is."""

    def __init__(self) -> None:
        self._guard = threading.Lock()  # held for bookkeeping only, never across a broadcast
        self._probing: threading.Event | None = None
        self.workers = 0
        self.at = float("-inf")

    def _fresh(self, ttl: float) -> bool:
        return time.monotonic() - self.at < (ttl if self.workers else min(ttl, NONE_CACHE_SECONDS))

    def count(self, ttl: float) -> int:
        with self._guard:
            if self._fresh(ttl):
                return self.workers
            running, self._probing = self._probing, self._probing or threading.Event()
        if running is not None:  # another caller's probe is under way
            if self.at == float("-inf"):
                running.wait(FIRST_PROBE_WAIT_S)
            return self.workers
        return self._probe()

    def _probe(self) -> int:
        workers = 0
        try:
            workers = ping_workers()
        finally:
            with self._guard:
                self.workers, self.at = workers, time.monotonic()
                done, self._probing = self._probing, None
            if done is not None:
                done.set()
        return workers


@bp.record_once
def worker_probe(state) -> None:
    state.app.extensions[PROBE] = WorkerProbe()


def workers_cached() -> int:
    return current_app.extensions[PROBE].count(current_app.config["READY_CACHE_SECONDS"])


@bp.get("/readyz")
def readyz():
    checks = {"redis": redis_ok(), "postgres": db.ping()}
    workers = workers_cached() if checks["redis"] else 0
    checks["workers"] = workers > 0
    ready = all(checks.values())
    failed = [name for name, ok in checks.items() if not ok]
    body = {"status": "ok" if ready else "unavailable", "checks": checks, "workers": workers, "failed": failed}
    return jsonify(body), 200 if ready else 503
