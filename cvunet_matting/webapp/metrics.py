"""Prometheus metrics of a web process, served at /metrics.

Request counts and latencies are counted in each process. Under gunicorn they are summed over every
worker process of the instance: `gunicorn_conf` sets PROMETHEUS_MULTIPROC_DIR (a folder of the instance's
own, emptied at start, dead workers marked in `child_exit`) and a scrape reads every process's files.
Without it (the dev server, tests) a scrape sees only the process that answers it. Queue length, task
states, each queue's work waiting and in hand (`cvunet_queue_work`, the autoscaler's signal:
recovery/backlog.py) and the data disk's usage (the filesystem holding CVUNET_DATA_DIR) are read at scrape time, by
the process that answers, so they appear once; the bytes the service's own files take are too slow to
count per scrape, so they come from retention's hourly measurement, with its time
(`cvunet_data_bytes_measured_timestamp_seconds`: alert on it going stale, not on its absence before
the first sweep).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import psycopg2
import redis
from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from cvunet_matting import db
from cvunet_matting.cleanup.retention import data_bytes
from cvunet_matting.db import reads
from cvunet_matting.recovery.backlog import queue_work
from cvunet_matting.states import TASK_STATES
from cvunet_matting.storage.redis_client import get_redis

log = logging.getLogger(__name__)


DISK = ("used", "free", "total")
DATA_BYTES_HELP = "Bytes of the service's inputs and outputs (archives included), as retention last measured"

# Labels are series: a method as the client spelt it ("X000001", ...) would let anyone grow /metrics
# (and gunicorn's metric files) without bound, one request at a time.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ScrapeCollector:
    """Queue length (Redis LLEN), each queue's work waiting and in hand (Redis, the workers'
    heartbeats), task counts by state (PostgreSQL) and the data disk, read when scraped."""

    def __init__(self, queue: str, data_dir: Path, queues: tuple[str, ...] = ()):
        self.queue = queue
        self.queues = queues or (queue,)
        self.data_dir = data_dir

    def describe(self):
        # Without describe(), registering would call collect() and touch Redis and Postgres.
        families = [self._queue_family(), *self._work_families(), self._tasks_family()]
        return [*families, *self._disk_families(), *self._data_families()]

    @staticmethod
    def _work_families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "cvunet_queue_work",
                "Images (tasks) of a queue waiting in Redis, prefetched or running, or held by a live worker: "
                "what an autoscaler should read (the queue's length alone misses what workers hold)",
                labels=["queue"],
            ),
            GaugeMetricFamily(
                "cvunet_queue_messages",
                "A queue's work by where it is: ready (the Redis list), delivered (unacknowledged: prefetched "
                "or running), held (by a live worker's heartbeat, in neither)",
                labels=["queue", "state"],
            ),
        ]

    @staticmethod
    def _disk_families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(f"cvunet_data_disk_{kind}_bytes", f"Bytes {kind} on the filesystem of the data root")
            for kind in DISK
        ]

    @staticmethod
    def _data_families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily("cvunet_data_bytes", DATA_BYTES_HELP),
            GaugeMetricFamily("cvunet_data_bytes_measured_timestamp_seconds", "When cvunet_data_bytes was measured"),
        ]

    @staticmethod
    def _queue_family() -> GaugeMetricFamily:
        return GaugeMetricFamily("cvunet_queue_length", "Messages waiting in the Celery queue (Redis LLEN)")

    @staticmethod
    def _tasks_family() -> GaugeMetricFamily:
        return GaugeMetricFamily("cvunet_tasks", "Tasks recorded in PostgreSQL, by state", labels=["state"])

    def collect(self):
        yield from self._disk()
        queue = self._queue_family()
        try:
            client = get_redis()
            queue.add_metric([], client.llen(self.queue))
            yield queue
            yield from self._work(client)
            yield from self._data(data_bytes(client))
        except redis.RedisError as exc:
            log.warning("metrics: queue length or data size unavailable: %s", exc)
        tasks = self._tasks_family()
        try:
            with db.transaction() as cur:
                counts = reads.state_counts(cur)
        except psycopg2.Error as exc:
            log.warning("metrics: task counts unavailable: %s", exc)
            return
        for state in TASK_STATES:
            tasks.add_metric([state], counts.get(state, 0))
        yield tasks

    def _work(self, client):
        total, by_state = self._work_families()
        for name, work in queue_work(client, self.queues).items():
            total.add_metric([name], work.total)
            for state in ("ready", "delivered", "held"):
                by_state.add_metric([name, state], getattr(work, state))
        yield from (total, by_state)

    def _disk(self):
        try:
            usage = shutil.disk_usage(self.data_dir)
        except OSError as exc:  # not created yet, or its mount is gone: the scrape goes on without it
            log.warning("metrics: data disk usage unavailable: %s", exc)
            return
        for family, value in zip(self._disk_families(), (usage.used, usage.free, usage.total), strict=True):
            family.add_metric([], value)
            yield family

    def _data(self, measured: tuple[int, float] | None):
        if measured is None:  # no sweep has measured yet: absent rather than a misleading 0
            return
        for family, value in zip(self._data_families(), measured, strict=True):
            family.add_metric([], value)
            yield family


def init_app(app: Flask) -> CollectorRegistry:
    """Count every request by endpoint, method and status, and serve /metrics."""
    registry = CollectorRegistry()
    requests = Counter(
        "cvunet_http_requests_total", "HTTP requests", ["endpoint", "method", "status"], registry=registry
    )
    latency = Histogram(
        "cvunet_http_request_seconds", "HTTP request latency", ["endpoint", "method"], registry=registry
    )
    cfg = app.extensions["cvunet.settings"]
    scrape = ScrapeCollector(cfg.queue, cfg.data_dir, (cfg.queue, cfg.bookkeeping_queue))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        served = CollectorRegistry()
        multiprocess.MultiProcessCollector(served)
    else:
        served = registry
    served.register(scrape)

    @app.before_request
    def start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def record(response):
        started = g.pop("metrics_started", None)
        endpoint = request.url_rule.rule if request.url_rule else "<unmatched>"
        method = request.method if request.method in KNOWN_METHODS else "other"
        requests.labels(endpoint, method, str(response.status_code)).inc()
        if started is not None:
            latency.labels(endpoint, method).observe(time.perf_counter() - started)
        return response

    def metrics():
        return Response(generate_latest(served), content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics)
    app.extensions["cvunet.metrics"] = registry
    return registry
