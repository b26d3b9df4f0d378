"""Start one Celery worker per GPU (or N CPU workers) and supervise them until told to stop."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cvunet_matting.config import load_settings

from .overlap import load_overlap

log = logging.getLogger(__name__)


@dataclass
class WorkerSpec:
    name: str  # Celery node name, e.g. gpu0@%h
    env: dict
    role: str = "model"  # model: images, the model loaded; bookkeeping: batches' callbacks, no model


BOOKKEEPING_ENV = {"CVUNET_WORKER_ROLE": "bookkeeping", "CUDA_VISIBLE_DEVICES": "", "CVUNET_DEVICE": "cpu"}


def bookkeeper() -> WorkerSpec:
    """The light CPU worker of the bookkeeping queue: no model, no GPU, no metrics port."""
    return WorkerSpec("books@%h", {**BOOKKEEPING_ENV, "CVUNET_METRICS_PORT": "0"}, role="bookkeeping")


def plan(
    gpus: list[str], cpus: int, metrics_port: int = 0, intra_threads: int = 0, cores: int | None = None
) -> list[WorkerSpec]:
    """One worker per GPU, pinned with CUDA_VISIBLE_DEVICES; or `cpus` CPU-only workers.

    CPU workers share the cores: unless CVUNET_INTRA_THREADS is set, each gets cores // cpus
    inference threads (N workers of one thread per core each would oversubscribe the machine
    N times over). With a metrics port, worker i serves /metrics on metrics_port + i.
    """
    if gpus:
        specs = [WorkerSpec(f"gpu{g}@%h", {"CUDA_VISIBLE_DEVICES": g, "CVUNET_DEVICE": "cuda"}) for g in gpus]
    else:
        threads = intra_threads or max(1, (cores or os.cpu_count() or 1) // max(cpus, 1))
        cpu_env = {"CUDA_VISIBLE_DEVICES": "", "CVUNET_DEVICE": "cpu", "CVUNET_INTRA_THREADS": str(threads)}
        specs = [WorkerSpec(f"cpu{i}@%h", dict(cpu_env)) for i in range(cpus)]
    for index, spec in enumerate(specs):
        spec.env["CVUNET_METRICS_PORT"] = str(metrics_port + index if metrics_port else 0)
    return specs


def concurrency(spec: WorkerSpec) -> int:
    if spec.role == "bookkeeping":
        return load_settings({**os.environ, **spec.env}).bookkeeping_concurrency
    return model_concurrency(spec)


def model_concurrency(spec: WorkerSpec) -> int:
    """Pool processes of the worker: 1 on the CPU (the model in its one child needs the cores); on a
    GPU (overlapped, see overlap.py) one per image held at once, all sharing one device process that
    owns the GPU's one session.

    Prefork, not threads, either way: a crash (out of memory, a segfault, a poison input) takes one
    pool process and its one image, which Celery requeues and the attempt counter caps, while the
    main process keeps its heartbeat and its other images; and time limits are enforced. Under the
    threads pool the same crash would kill every image in hand and count a crash against each.
    """
    return load_overlap({**os.environ, **spec.env}).concurrency


def command(spec: WorkerSpec, queue: str, loglevel: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "cvunet_matting",
        "worker",
        "-Q",
        queue,
        "-n",
        spec.name,
        "--concurrency",
        str(concurrency(spec)),
        "--pool",
        "prefork",
        "--loglevel",
        loglevel,
        "-E",
    ]


def metrics_root() -> Path:
    return Path(tempfile.gettempdir()) / f"cvunet-worker-metrics-{os.getpid()}"


def metrics_folder(spec: WorkerSpec) -> dict:
    """A model worker with a metrics port gets its own, empty PROMETHEUS_MULTIPROC_DIR: its pool
    processes write their counts there and the one serving the port adds them all up. Emptied at
    each (re)start: a new process starts its counters from zero, which Prometheus reads as a reset."""
    if spec.role != "model" or spec.env.get("CVUNET_METRICS_PORT", "0") == "0":
        return {}
    folder = metrics_root() / spec.name.split("@")[0]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, mode=0o700)
    return {"PROMETHEUS_MULTIPROC_DIR": str(folder)}


class Supervisor:
    """Keeps the workers running; on SIGTERM/SIGINT passes the signal on (warm shutdown) and waits.

    `queues` maps a role to the queue its workers consume."""

    def __init__(self, specs: list[WorkerSpec], queues: dict[str, str], loglevel: str):
        self.specs, self.queues, self.loglevel = specs, queues, loglevel
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping = False

    def start(self, spec: WorkerSpec) -> None:
        env = {**os.environ, **spec.env, **metrics_folder(spec)}
        argv = command(spec, self.queues[spec.role], self.loglevel)
        self.procs[spec.name] = subprocess.Popen(argv, env=env)
        log.info("started worker %s (pid %d)", spec.name, self.procs[spec.name].pid)

    def stop(self, signum, _frame) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        for spec in self.specs:
            self.start(spec)
        while True:
            for spec in self.specs:
                code = self.procs[spec.name].poll()
                if code is not None and not self.stopping:
                    log.warning("worker %s exited with %s; restarting", spec.name, code)
                    time.sleep(1)
                    self.start(spec)
            if self.stopping and all(p.poll() is not None for p in self.procs.values()):
                shutil.rmtree(metrics_root(), ignore_errors=True)
                return 0
            time.sleep(0.5)
