"""Prometheus metrics of a worker process: task outcomes, stage latencies, GPU memory and load (NVML)."""

from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger(__name__)
REGISTRY = CollectorRegistry()
TASKS = Counter("cvunet_worker_tasks_total", "Images processed, by outcome", ["state"], registry=REGISTRY)
STAGES = Histogram(
    "cvunet_worker_stage_seconds",
    "Time per image in each stage",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
# How sure the model was of each image it cut out (image/confidence.py; a reused result is not counted
# again): a shift of mass below 0.85, where cut-outs are flagged doubtful, says the inputs changed.
CONFIDENCE = Histogram(
    "cvunet_worker_confidence",
    "The model's confidence in each new cut-out (0-1, high: sure; below 0.85: doubtful)",
    buckets=(0.25, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0),
    registry=REGISTRY,
)


class GpuCollector:
    """Reads GPU memory and utilisation through NVML at scrape time; nothing when there is no GPU."""

    def __init__(self):
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        count = pynvml.nvmlDeviceGetCount()
        self.indices = [int(i) for i in visible.split(",") if i.strip().isdigit()] or list(range(count))

    def collect(self):
        used = GaugeMetricFamily("cvunet_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily("cvunet_gpu_memory_total_bytes", "GPU memory in all", labels=["gpu"])
        util = GaugeMetricFamily("cvunet_gpu_utilization_ratio", "GPU busy fraction", labels=["gpu"])
        for index in self.indices:
            handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            used.add_metric([str(index)], memory.used)
            total.add_metric([str(index)], memory.total)
            util.add_metric([str(index)], self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
        yield from (used, total, util)


def observe(result: dict) -> None:
    TASKS.labels(result.get("state", "unknown")).inc()
    for stage, seconds in (result.get("timings") or {}).items():
        STAGES.labels(stage).observe(seconds)
    if result.get("confidence") is not None and not result.get("reused"):
        CONFIDENCE.observe(result["confidence"])


def serve(port: int, addr: str) -> None:
    """Serve /metrics on `port` (0: don't); GPU figures only where NVML finds a GPU.

    An overlapped worker has several pool processes and only the first to bind serves the port: with
    PROMETHEUS_MULTIPROC_DIR (set by `cvunet-matting worker`, see workers.py) it reports the counts of
    every pool process of the worker, not just its own."""
    if not port:
        return
    served = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        served = CollectorRegistry()
        multiprocess.MultiProcessCollector(served)
    try:
        served.register(GpuCollector())
    except Exception as exc:  # no pynvml, no driver or no GPU: CPU workers report without GPU figures
        log.info("GPU metrics off: %s", exc)
    start_http_server(port, addr=addr, registry=served)
