"""`make bench-worker`: does an overlapped worker keep a fast device busy? (prints; asserts nothing)

A real worker process (Celery, Redis, the PostgreSQL mirror) against a simulated device: the
model's run replaced by a sleep of L ms that holds no CPU, as a GPU run would (tests/support/
device.py installs it through sitecustomize in the worker's processes only). 1600x1200 JPEGs,
RGBA PNG results. For each L and each largest batch it prints the worker's images/s and the bound:
min(the device's rate, batch x 1000 / L images/s; what this host's cores do for the CPU stages
alone, measured in the same run: read, decode, preprocess, postprocess with the edge steps,
encode, atomic write, in one process per core with no queue); and their ratio. For each L, today's
loop (one pool process, every stage in turn) runs too, for comparison.
Usage: python benchmarks/bench_worker.py [--images 120] [--latency 5 20 50] [--batch 1 4 8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import harness
import numpy as np

from tests import support

WARM = 4


class FakeDevice:
    """The overlapped worker's session with the device answering at once: CPU stages only."""

    def __init__(self):
        from cvunet_matting.model.manifest import builtin

        self.manifest, self.version = builtin("isnet-fp16"), "bench"
        self.answer = np.zeros((1, 1, *self.manifest.size), np.uint8)
        height, width = self.manifest.size
        self.answer[..., height // 5 : height - height // 5, width // 4 : width - width // 4] = 255

    def preprocess(self, rgb):
        from cvunet_matting.model.session import model_input

        return model_input(rgb, self.manifest, uint8=True)

    def infer(self, tensor):
        return self.answer

    def postprocess(self, raw, height, width):
        from cvunet_matting.model.session import alpha_from_output

        return alpha_from_output(raw, self.manifest, height, width)

    def predict_alpha(self, rgb, timings=None):
        from cvunet_matting.model.session import predict_alpha

        return predict_alpha(self, rgb, timings)


def _cpu_stages(index: int) -> float:
    from cvunet_matting.config import get_settings
    from cvunet_matting.malloc import tune_for_large_buffers
    from cvunet_matting.worker.device_client import one_thread_each

    tune_for_large_buffers()  # the workers' allocator settings (their image buffers are each mapped afresh)
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.image.matting import matte_bytes
    from cvunet_matting.storage.files import write_atomic

    data = (harness.ROOT / "cpu-in" / f"{index:04d}.jpg").read_bytes()
    # As in the overlapped worker's pool processes: one thread each, the processes are the parallelism.
    result = matte_bytes(data, OutputOptions(), FakeDevice(), one_thread_each(get_settings()))
    write_atomic(harness.ROOT / "cpu-out" / f"{index:04d}.png", result.data)
    return time.perf_counter()


def start_cpu_pool() -> ProcessPoolExecutor:
    """One process per core, forked before this process uses OpenCV: its thread pool does not survive
    a fork (setting its size in the child would then wait forever for threads it lost)."""
    cores = len(os.sched_getaffinity(0))
    pool = ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("fork"))
    list(pool.map(time.sleep, [0] * cores))  # a fork pool starts all its processes at the first call
    return pool


def cpu_bound(pool: ProcessPoolExecutor, images: list[bytes]) -> float:
    """Images/s of the CPU stages alone, one process per core, as the pool's processes do them."""
    (harness.ROOT / "cpu-in").mkdir(exist_ok=True)
    (harness.ROOT / "cpu-out").mkdir(exist_ok=True)
    for index, data in enumerate(images):
        (harness.ROOT / "cpu-in" / f"{index:04d}.jpg").write_bytes(data)
    list(pool.map(_cpu_stages, range(len(os.sched_getaffinity(0)))))  # warm: imports, allocator
    started = time.perf_counter()
    finished = list(pool.map(_cpu_stages, range(len(images))))
    return len(images) / (max(finished) - started)


def clear_results() -> None:
    """Forget earlier results: the same photos are matted by every run, and must not be reused."""
    from cvunet_matting import db

    with db.transaction() as cur:
        cur.execute("TRUNCATE results")


def successes(batch_id: str) -> int:
    from cvunet_matting import db

    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM tasks WHERE batch_id = %s AND state = 'success'", (batch_id,))
        return cur.fetchone()["n"]


def through_worker(images: list[bytes], latency_ms: float, batch: int | None, tag: str) -> tuple[float, str]:
    """Images/s of one worker (batch None: today's loop), from its first finished image to its last;
    and the device's mean batch size as it logged it."""
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.pipeline.submission import Item, submit_batch

    env = support.simulated_device_env(harness.ROOT / "sim", latency_ms)
    env |= {"CVUNET_OVERLAP": "1" if batch else "0", "CVUNET_MAX_BATCH": str(batch or 1)}
    proc = support.start_worker(f"{tag}@%h", harness.ROOT / "logs", env)
    try:
        clear_results()
        warm_id = submit_batch([Item(f"warm{i}.jpg", d) for i, d in enumerate(images[:WARM])], OutputOptions())
        support.wait_until(lambda: successes(warm_id) == WARM, 300, message="warm-up")
        clear_results()
        batch_id = submit_batch([Item(f"{tag}-{i}.jpg", d) for i, d in enumerate(images)], OutputOptions())
        support.wait_until(lambda: successes(batch_id) == len(images), 1800, interval=0.5, message=tag)
    finally:
        support.kill_group(proc)
    finished = sorted(r["finished_at"] for r in support.rows_of(batch_id))
    rate = (len(finished) - 1) / (finished[-1] - finished[0]).total_seconds()
    sizes = re.findall(r"device: \d+ images in \d+ runs, ([\d.]+) per run", proc.log_path.read_text())
    return rate, (sizes[-1] if sizes else "-")


def cell_name(batch: int | None) -> str:
    return f"overlapped, b{batch}" if batch else "today's loop"


def measure_cell(
    pool, images: list[bytes], sample: list[bytes], latency: float, batch: int | None, today: int
) -> float:
    """One run of one (L, batch) cell, printed as a row; returns its ratio to the bound."""
    # This shared host drifts by a third within minutes: each run gets its own bound, the mean of the
    # CPU stages' rate measured just before and just after it.
    before = cpu_bound(pool, sample)
    count = today if batch is None else len(images)
    tag = f"ov{latency:g}x{batch}" if batch else f"today{latency:g}"
    rate, size = through_worker(images[:count], latency, batch, tag)
    cpu = statistics.mean([before, cpu_bound(pool, sample)])
    device = (batch or 1) * 1000 / latency
    bound = min(device, cpu)
    row = f"{latency:5g} {cell_name(batch):>16} {rate:7.2f} {device:7.1f} {cpu:6.2f} {bound:6.2f} {rate / bound:6.2f}"
    print(f"{row} {size:>6}", flush=True)
    return rate / bound


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--latency", type=float, nargs="*", default=[5, 20, 50], help="ms per device run")
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 4, 8], help="CVUNET_MAX_BATCH values")
    parser.add_argument("--in-flight", type=int, default=0, help="CVUNET_IN_FLIGHT (0: its default)")
    parser.add_argument("--today-images", type=int, default=40, help="images for today's loop (0: skip it)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds over every cell; >1 adds each cell's median")
    args = parser.parse_args()
    os.environ["CVUNET_MODEL"] = str(support.build_isnet_shaped_model(harness.ROOT / "models" / "sim-isnet.onnx"))
    if args.in_flight:
        os.environ["CVUNET_IN_FLIGHT"] = str(args.in_flight)
    pool = start_cpu_pool()
    harness.setup()
    images = harness.photos(args.images, 1200, 1600)
    sample = images[: max(8, args.images // 3)]
    print(f"{len(os.sched_getaffinity(0))} cores; the CPU-stages bound is measured right before and after each run")
    print(f"{'L ms':>5} {'worker':>16} {'img/s':>7} {'device':>7} {'CPU':>6} {'bound':>6} {'ratio':>6} {'batch':>6}")
    configs = ([None] if args.today_images else []) + list(args.batch)
    cells = [(latency, batch) for latency in args.latency for batch in configs]
    ratios: dict[tuple, list[float]] = {cell: [] for cell in cells}
    # Round after round over every cell, so that the host's drift falls on all of them alike.
    for _ in range(args.repeat):
        for latency, batch in cells:
            ratios[(latency, batch)].append(measure_cell(pool, images, sample, latency, batch, args.today_images))
    if args.repeat > 1:
        print(f"median ratio of {args.repeat} rounds:")
        for (latency, batch), values in ratios.items():
            each = " ".join(f"{v:.2f}" for v in values)
            print(f"{latency:5g} {cell_name(batch):>16} {statistics.median(values):6.2f}   ({each})")
    pool.shutdown()


if __name__ == "__main__":
    main()
