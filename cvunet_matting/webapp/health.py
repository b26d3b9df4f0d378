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
_lock = threading.Lock()


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


def workers_cached() -> int:
    """The worker count, asked at most every READY_CACHE_SECONDS so health checks don't flood the broker.
    "None" is asked again after a second at most: a stack starting up is ready when its first worker is."""
    cache = current_app.extensions.setdefault("cvunet.ready_cache", {"at": float("-inf"), "workers": 0})
    ttl = current_app.config["READY_CACHE_SECONDS"]
    with _lock:
        if time.monotonic() - cache["at"] >= (ttl if cache["workers"] else min(ttl, NONE_CACHE_SECONDS)):
            cache["workers"], cache["at"] = ping_workers(), time.monotonic()
        return cache["workers"]


@bp.get("/readyz")
def readyz():
    checks = {"redis": redis_ok(), "postgres": db.ping()}
    workers = workers_cached() if checks["redis"] else 0
    checks["workers"] = workers > 0
    ready = all(checks.values())
    failed = [name for name, ok in checks.items() if not ok]
    body = {"status": "ok" if ready else "unavailable", "checks": checks, "workers": workers, "failed": failed}
    return jsonify(body), 200 if ready else 503
