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
        from cvunet_matting.manifest import builtin

        self.manifest, self.version = builtin("isnet-fp16"), "bench"
        self.answer = np.zeros((1, 1, *self.manifest.size), np.uint8)
        height, width = self.manifest.size
        self.answer[..., height // 5 : height - height // 5, width // 4 : width - width // 4] = 255

    def preprocess(self, rgb):
        from cvunet_matting.model import model_input

        return model_input(rgb, self.manifest, uint8=True)

    def infer(self, tensor):
        return self.answer

    def postprocess(self, raw, height, width):
        from cvunet_matting.model import alpha_from_output

        return alpha_from_output(raw, self.manifest, height, width)

    def predict_alpha(self, rgb, timings=None):
        from cvunet_matting.model import predict_alpha

        return predict_alpha(self, rgb, timings)


def _cpu_stages(index: int) -> float:
    from cvunet_matting.config import get_settings
    from cvunet_matting.encoding import OutputOptions
    from cvunet_matting.matting import matte_bytes
    from cvunet_matting.storage import write_atomic

    data = (harness.ROOT / "cpu-in" / f"{index:04d}.jpg").read_bytes()
    result = matte_bytes(data, OutputOptions(), FakeDevice(), get_settings())
    write_atomic(harness.ROOT / "cpu-out" / f"{index:04d}.png", result.data)
    return time.perf_counter()


def cpu_bound(images: list[bytes]) -> float:
    """Images/s of the CPU stages alone, one process per core, as the pool's processes do them."""
    (harness.ROOT / "cpu-in").mkdir(exist_ok=True)
    (harness.ROOT / "cpu-out").mkdir(exist_ok=True)
    for index, data in enumerate(images):
        (harness.ROOT / "cpu-in" / f"{index:04d}.jpg").write_bytes(data)
    cores = len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_cpu_stages, range(cores)))  # warm: imports, allocator
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
    from cvunet_matting.encoding import OutputOptions
    from cvunet_matting.submission import Item, submit_batch

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--latency", type=float, nargs="*", default=[5, 20, 50], help="ms per device run")
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 4, 8], help="CVUNET_MAX_BATCH values")
    parser.add_argument("--today-images", type=int, default=40, help="images for today's loop (0: skip it)")
    args = parser.parse_args()
    os.environ["CVUNET_MODEL"] = str(support.build_isnet_shaped_model(harness.ROOT / "models" / "sim-isnet.onnx"))
    harness.setup()
    images = harness.photos(args.images, 1200, 1600)
    cores = len(os.sched_getaffinity(0))
    before = cpu_bound(images)
    print(f"CPU stages alone, {cores} processes (before): {before:6.2f} images/s", flush=True)
    runs = []
    for latency in args.latency:
        if args.today_images:
            rate, _ = through_worker(images[: args.today_images], latency, None, f"today{latency:g}")
            runs.append((latency, None, rate, "1"))
            print(f"  L={latency:g} ms, today's loop: {rate:6.2f} images/s", flush=True)
        for batch in args.batch:
            rate, size = through_worker(images, latency, batch, f"ov{latency:g}x{batch}")
            runs.append((latency, batch, rate, size))
            print(f"  L={latency:g} ms, overlapped, batch {batch}: {rate:6.2f} images/s", flush=True)
    after = cpu_bound(images)
    cpu = statistics.mean([before, after])
    print(f"CPU stages alone (after): {after:6.2f} images/s; bound taken from their mean, {cpu:.2f}")
    print(f"\n{'L ms':>5} {'worker':>16} {'img/s':>7} {'device':>7} {'CPU':>6} {'bound':>6} {'ratio':>6} {'batch':>6}")
    for latency, batch, rate, size in runs:
        device = (batch or 1) * 1000 / latency
        bound = min(device, cpu)
        name = f"overlapped, b{batch}" if batch else "today's loop"
        row = f"{latency:5g} {name:>16} {rate:7.2f} {device:7.1f} {cpu:6.2f} {bound:6.2f} {rate / bound:6.2f}"
        print(f"{row} {size:>6}")


if __name__ == "__main__":
    main()
