"""`make bench-pipeline`: host CPU per image by stage; bare model throughput vs end to end through
Redis/Celery/Postgres.

First, the host CPU a GPU node's worker spends per image outside the model, stage by stage (decode,
preprocess, postprocess with the edge steps, encode, write: process CPU time, not wall), at 1600x1200
and 640x480, against a stand-in model answering with the real ISNet's matte of the photo
(benchmarks/cpu_stages.py; the edge steps as they were before edge-speed, and on the device, in the same run).
Then images/s of the model in-process, and the same images as a batch through 1 and 2 CPU workers;
prints the ratio per worker and the median queue + mirror overhead per task. N CPU workers share the
cores, so each is also compared with N bare processes running side by side. With --tiny the model is
the stand-in (an ISNet-shaped graph whose run answers at once with the real model's matte of the
astronaut, tests/support/device.py): the pipeline's own cost on a realistic matte.
Usage: python benchmarks/bench_pipeline.py [--images 100] [--tiny] [--cpu-only] [--cpu-repeat 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cpu_stages
import harness
from baremodel import warmed_up

from tests import support

BARE_PROCESS = Path(__file__).with_name("bare_process.py")


def bare(images: list[bytes]) -> tuple[float, float]:
    seconds, timings = warmed_up(images[0])(images)
    return len(images) / seconds, statistics.median(t["inference"] for t in timings)


def bare_parallel(images: list[bytes], processes: int) -> float:
    """Images/s of `processes` bare-model processes at once, each with the threads a CPU worker gets:
    what this machine does with N workers' worth of matting and no queue at all."""
    from cvunet_matting.worker.supervisor import plan

    procs = []
    for index, spec in enumerate(plan([], processes)):
        folder = harness.ROOT / f"bare-{processes}-{index}"
        folder.mkdir(parents=True)
        for number, data in enumerate(images[index::processes]):
            (folder / f"{number:05d}.jpg").write_bytes(data)
        procs.append(
            subprocess.Popen(
                [sys.executable, str(BARE_PROCESS), str(folder)],
                env={**os.environ, **spec.env},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:  # every model loaded and warm before the clock starts
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    finished = [proc.stdout.readline().split() for proc in procs]
    for proc in procs:
        proc.wait()
    return sum(int(count) for count, _ in finished) / max(float(seconds) for _, seconds in finished)


def through_queue(images: list[bytes], workers: int, tag: str) -> tuple[float, tuple, float]:
    from cvunet_matting import db
    from cvunet_matting.db import reads
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.pipeline.submission import Item, submit_batch
    from cvunet_matting.worker.supervisor import plan

    # As `cvunet-matting worker --cpu N` would start them: N workers share the cores.
    specs = plan([], workers)
    procs = [support.start_worker(f"bench{tag}{i}@%h", harness.ROOT / "logs", s.env) for i, s in enumerate(specs)]
    try:
        # Warm each worker's model first, so load time is not counted as throughput.
        warm, images = images[:2], images[2:]
        warm_id = submit_batch([Item(f"w{i}.jpg", d) for i, d in enumerate(warm)], OutputOptions())
        support.wait_until(lambda: _done(warm_id), 300, message="warm-up batch")
        started = time.perf_counter()
        batch_id = submit_batch([Item(f"{tag}-{i}.jpg", d) for i, d in enumerate(images)], OutputOptions())
        support.wait_until(lambda: _done(batch_id), 3600, message="batch")
        elapsed = time.perf_counter() - started
        with db.transaction() as cur:
            rows = reads.batch_tasks(cur, batch_id)
    finally:
        for proc in procs:
            support.kill_group(proc)
    inference = statistics.median(r["timings"]["inference"] for r in rows)
    return len(images) / elapsed, overheads(rows), inference


def _done(batch_id: str) -> bool:
    from cvunet_matting import db
    from cvunet_matting.db import reads

    with db.transaction() as cur:
        return reads.get_batch(cur, batch_id)["state"] == "done"


STORAGE_STAGES = ("read", "write")  # reading the input and the atomic (fsynced) output write


def overheads(rows: list[dict]) -> tuple[list[float], list[float], list[float], float]:
    """Per task: time in the task outside the model and storage stages, the gap since the worker's
    previous task, and the storage stages; and the share of the workers' span (first start to last
    finish) spent in the model stages."""
    by_worker: dict[str, list[dict]] = {}
    for row in rows:
        by_worker.setdefault(row["worker"], []).append(row)
    inside, gaps, storage, span = [], [], [], 0.0
    for tasks in by_worker.values():
        tasks.sort(key=lambda r: r["started_at"])
        span += (max(r["finished_at"] for r in tasks) - tasks[0]["started_at"]).total_seconds()
        for prev, row in zip([None, *tasks], tasks, strict=False):
            stored = sum(row["timings"].get(s, 0.0) for s in STORAGE_STAGES)
            duration = (row["finished_at"] - row["started_at"]).total_seconds()
            inside.append(duration - model_seconds(row) - stored)
            storage.append(stored)
            gaps.append(max((row["started_at"] - prev["finished_at"]).total_seconds(), 0.0) if prev else 0.0)
    matting = sum(model_seconds(r) for r in rows)
    return inside, gaps, storage, matting / span


def model_seconds(row: dict) -> float:
    from cvunet_matting.image.matting import MODEL_STAGES

    return sum(row["timings"][s] for s in MODEL_STAGES)


def stand_in() -> None:
    """This process, its workers and its bare processes on the stand-in model (instant, real matte)."""
    from tests.support.mattes import model_matte_path

    os.environ["CVUNET_MODEL"] = str(support.build_isnet_shaped_model(harness.ROOT / "models" / "sim-isnet.onnx"))
    os.environ.update(support.simulated_device_env(harness.ROOT / "sim", 0, matte=model_matte_path()))
    # The replaced session run in this process too (its subprocesses import it at start-up).
    spec = importlib.util.spec_from_file_location("sim_device", harness.ROOT / "sim" / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--tiny", action="store_true", help="the stand-in model: measures the pipeline's own cost")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--cpu-only", action="store_true", help="only the host CPU per stage")
    parser.add_argument("--cpu-repeat", type=int, default=15, help="runs per size and variant for the CPU stages")
    args = parser.parse_args()
    cpu_stages.report([(1600, 1200), (640, 480)], args.cpu_repeat)
    if args.cpu_only:
        return
    if args.tiny:
        stand_in()
    harness.setup()
    n = args.images
    # Disjoint sets of alike photos: results of one run cannot be reused by the next.
    images = harness.photos(n + len(args.workers) * (n + 2))
    # This shared machine drifts by 20% or more over minutes: bare runs before and after the queue
    # runs, and the baseline is their mean.
    before, inference = bare(images[:n])
    print(f"bare model, in-process, before: {before:6.3f} images/s, median inference {inference * 1000:.0f} ms")
    results = []
    for index, workers in enumerate(args.workers):
        start = n + index * (n + 2)
        queued = through_queue(images[start : start + n + 2], workers, f"w{workers}x")
        # N workers share the cores: their fair baseline is N bare processes sharing them too.
        side_by_side = bare_parallel(images[:n], workers) if workers > 1 else None
        results.append((workers, side_by_side, *queued))
    after, inference = bare(images[:n])
    print(f"bare model, in-process, after:  {after:6.3f} images/s, median inference {inference * 1000:.0f} ms")
    base = (before + after) / 2
    for workers, side_by_side, rate, (inside, gaps, storage, busy), inference in results:
        report(workers, rate, base, side_by_side, inside, gaps, storage, busy, inference)


def report(workers, rate, base, side_by_side, inside, gaps, storage, busy, inference) -> None:
    over = [a + b for a, b in zip(inside, gaps, strict=True)]
    print(f"end to end, {workers} CPU worker(s): {rate:6.3f} images/s, {rate / base:5.2f} of one bare process")
    if side_by_side:
        print(
            f"  bare, {workers} processes side by side (threads as the workers get them): {side_by_side:6.3f} "
            f"images/s; end to end per worker: {rate / side_by_side:5.2f} of a bare process with the same share"
        )
    else:
        print(f"  end to end per worker: {rate / base:5.2f} of a bare process")
    together = [a + b for a, b in zip(over, storage, strict=True)]
    print(
        f"  median queue+mirror overhead {statistics.median(over) * 1000:6.1f} ms/task "
        f"(in task {statistics.median(inside) * 1000:.1f}, between tasks {statistics.median(gaps) * 1000:.1f}); "
        f"median inference in the worker {inference * 1000:.0f} ms; workers spent {busy:.1%} of their time matting"
    )
    print(
        f"  besides, storage (input read, atomic output write with fsync): {statistics.median(storage) * 1000:.1f} "
        f"ms/task; queue + mirror + storage together {statistics.median(together) * 1000:.1f} ms/task"
    )


if __name__ == "__main__":
    main()
