"""Prometheus for `make run`: Debian's prometheus (and prometheus-node-exporter, if installed) on
127.0.0.1, scraping both web instances, the worker and the node, with the rules compose loads.

Optional: without a prometheus binary the stack runs without it and says so once.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from string import Template

from cvunet_matting.accounts import users as accounts
from cvunet_matting.errors import InputError

log = logging.getLogger(__name__)
REPO_MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
KEY_USER = "stack-prometheus"  # a user with API keys only (no password), holding a metrics-only key
RETENTION = "2d"  # a local stack's history: enough to look back on a run, small on disk


def find(*names: str) -> str | None:
    """The first of `names` on PATH or in /usr/bin, where Debian's packages put them (PATH may lack it)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin"])
    return next((path for name in names if (path := shutil.which(name, path=search))), None)


def scrape_key(path: Path) -> Path:
    """The file holding a metrics-only API key for the web's /metrics: kept while its key still works
    (one key for every run, not one more each start), else a new key of KEY_USER, mode 0600.
    Called after run.prepare's bootstrap_admin: a user made before it would stop the first admin."""
    if path.exists() and accounts.key_reads_metrics(path.read_text().strip()):
        return path
    try:
        accounts.add_user(KEY_USER, None)
    except InputError as exc:
        if exc.code != "exists":
            raise
    key, _ = accounts.new_key(KEY_USER, "prometheus of `make run`", metrics_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    # Created 0600, never widened afterwards: the key reads every user's task counts (and nothing else).
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(key)
    return path


def targets(ports: list[int]) -> str:
    return json.dumps([f"127.0.0.1:{port}" for port in ports])


def write_config(folder: Path, ports, interval: str, workers: int, node: bool) -> Path:
    values = {
        "INTERVAL": interval,
        "RULE_FILES": json.dumps(str(REPO_MONITORING / "rules" / "*.yml")),
        "KEY_FILE": json.dumps(str(scrape_key(folder / "web-token"))),
        "PROMETHEUS_TARGETS": targets([ports.prometheus]),
        "WEB_TARGETS": targets(list(ports.web)),
        # `cvunet-matting worker --cpu N` serves worker i's metrics on the port + i (workers.plan).
        "WORKER_TARGETS": targets([ports.worker_metrics + i for i in range(workers)]),
        "NODE_TARGETS": targets([ports.node_exporter] if node else []),
    }
    config = folder / "prometheus.yml"
    template = (REPO_MONITORING / "local" / "prometheus.yml.tmpl").read_text()
    config.write_text(Template(template).substitute(values))
    return config


def processes(folder: Path, ports, interval: str, workers: int) -> list[tuple[str, list[str]]]:
    """(name, argv) of the node exporter and Prometheus, for the stack to start last; none when
    prometheus is not installed. `ports`: the stack's Ports; `folder`: config, key and storage."""
    prometheus = find("prometheus")
    if prometheus is None:
        log.warning("no prometheus binary: running without Prometheus (apt-get install prometheus)")
        return []
    started = []
    node = find("prometheus-node-exporter", "node_exporter")  # Debian's name, upstream's
    if node is None:
        log.warning("no node exporter: Prometheus runs without node metrics (apt-get install prometheus-node-exporter)")
    else:
        started.append(("node-exporter", [node, f"--web.listen-address=127.0.0.1:{ports.node_exporter}"]))
    folder.mkdir(parents=True, exist_ok=True)
    config = write_config(folder, ports, interval, workers, node is not None)
    argv = [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address=127.0.0.1:{ports.prometheus}",
    ]
    return [*started, ("prometheus", argv)]
