"""Prometheus metrics of a web process, served at /metrics.

Request counts and latencies are per process: each gunicorn worker counts its own requests, so a
scrape through the load balancer sees one process at a time. Set PROMETHEUS_MULTIPROC_DIR (an empty
folder, wiped at start, and `multiprocess.mark_process_dead` in gunicorn's `child_exit` hook) to
aggregate every process of an instance instead. Queue length and task states are read at scrape time.
"""

from __future__ import annotations

import logging
import os
import time

import psycopg2
import redis
from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from . import db
from .db import reads
from .redis_client import get_redis
from .states import TASK_STATES

log = logging.getLogger(__name__)


class ScrapeCollector:
    """Queue length (Redis LLEN) and task counts by state (PostgreSQL), read when scraped."""

    def __init__(self, queue: str):
        self.queue = queue

    def describe(self):
        # Without describe(), registering would call collect() and touch Redis and Postgres.
        return [self._queue_family(), self._tasks_family()]

    @staticmethod
    def _queue_family() -> GaugeMetricFamily:
        return GaugeMetricFamily("cvunet_queue_length", "Messages waiting in the Celery queue (Redis LLEN)")

    @staticmethod
    def _tasks_family() -> GaugeMetricFamily:
        return GaugeMetricFamily("cvunet_tasks", "Tasks recorded in PostgreSQL, by state", labels=["state"])

    def collect(self):
        queue = self._queue_family()
        try:
            queue.add_metric([], get_redis().llen(self.queue))
            yield queue
        except redis.RedisError as exc:
            log.warning("metrics: queue length unavailable: %s", exc)
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


def init_app(app: Flask) -> CollectorRegistry:
    """Count every request by endpoint, method and status, and serve /metrics."""
    registry = CollectorRegistry()
    requests = Counter(
        "cvunet_http_requests_total", "HTTP requests", ["endpoint", "method", "status"], registry=registry
    )
    latency = Histogram(
        "cvunet_http_request_seconds", "HTTP request latency", ["endpoint", "method"], registry=registry
    )
    scrape = ScrapeCollector(app.extensions["cvunet.settings"].queue)
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
        requests.labels(endpoint, request.method, str(response.status_code)).inc()
        if started is not None:
            latency.labels(endpoint, request.method).observe(time.perf_counter() - started)
        return response

    def metrics():
        return Response(generate_latest(served), content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics)
    app.extensions["cvunet.metrics"] = registry
    return registry
