"""gunicorn settings and hooks of a web instance (`gunicorn -c python:cvunet_matting.webapp.gunicorn_conf ...`):
keep-alive outlasting Traefik's, and one /metrics for all of its worker processes.

Each process counts its own requests; in prometheus_client's multiprocess mode every process writes its
values to files in PROMETHEUS_MULTIPROC_DIR and a scrape sums them (`metrics.init_app`). prometheus_client
picks file-backed values when it is first imported, so the folder is settled here, when gunicorn reads this
module, before any worker imports the app (even with --preload). So import it only as gunicorn's config:
importing it sets PROMETHEUS_MULTIPROC_DIR for the whole process. gunicorn takes only the names of its own
settings from here (keepalive, the hooks below) and ignores the rest.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A folder named by the launcher is theirs (compose, `make run`: one per instance); without one, this
# master makes its own (mode 0700), so two instances never add up each other's files, and removes it.
_OWN = not os.environ.get(_ENV)
if _OWN:
    os.environ[_ENV] = tempfile.mkdtemp(prefix="cvunet-metrics-")
_DIR = Path(os.environ[_ENV])
_DIR.mkdir(parents=True, exist_ok=True)

# Idle keep-alive connections stay open 120 s (gunicorn's default is 2 s). Traefik keeps its idle connections
# to a server for 90 s (serversTransport idleConnTimeout, set so in traefik/): the side that closes
# first must be Traefik. Otherwise Traefik may send a request down a connection gunicorn is closing that
# moment, and a POST is not retried: the client gets a 502 for an upload the app never saw (CI met one).
# Idle connections sit in the gthread worker's poller, not in its threads.
keepalive = 120


def on_starting(server):
    """Start from no values: files left by an earlier run (a crash, a restarted container) would be summed in.
    Only prometheus_client's files go: the folder may be one an operator named."""
    for stale in _DIR.glob("*.db"):
        stale.unlink(missing_ok=True)


def post_worker_init(worker):
    """On SIGTERM (a stop, a deploy, a scale-down) the requests held for a result (?wait=, event streams)
    answer at once: gunicorn waits for in-flight requests, and a held one would keep the process up to
    its graceful timeout and then be cut off without an answer. gunicorn's own handler runs after."""
    from . import waiting  # the app is loaded by now: the metrics folder is long settled

    graceful = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        # Not in the handler itself: it interrupts the main thread, which may hold a lock close_all needs.
        threading.Thread(target=waiting.close_all, name="wait-close", daemon=True).start()
        if callable(graceful):
            graceful(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def child_exit(server, worker):
    """A worker gone (restarted, killed): its live gauges go with it; its counters stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(_DIR))


def on_exit(server):
    if _OWN:
        shutil.rmtree(_DIR, ignore_errors=True)
