"""`make bench-worker`: does an overlapped worker keep a fast device busy? (prints; asserts nothing)

A real worker process (Celery, Redis, the PostgreSQL mirror) against a simulated device: the
model's run replaced by a sleep of L ms that holds no CPU, as a GPU run would (tests/support/
device.py installs it through sitecustomize in the worker's processes only), answering with a real
model's matte of a real photo (tests/support/mattes.py: half subject, a thin soft band), so the edge
steps cost what they cost on photos. RGBA PNG results.

First, for each size of --ratio (640x480 x 2000 and 1600x1200 x 120 photos): the host CPU ms per
image of each CPU stage (one thread, no queue), then the local CLI (`cvunet-matting matte`) and the
overlapped worker with the production defaults on the same photos and device (2 ms), back to back:
their images/s and ratio, and the CPU ms per image of each, the worker's counting its own
redis-server and its PostgreSQL backends: the difference is the queue's own CPU cost.

Then the table (1600x1200 JPEGs): For each L and each largest batch it prints the worker's images/s and the bound:
min(the device's rate, batch x 1000 / L images/s; what this host's cores do for the CPU stages
alone, measured in the same run: read, decode, preprocess, postprocess with the edge steps,
encode, atomic write, in one process per core with no queue); and their ratio. For each L, today's
loop (one pool process, every stage in turn) runs too, for comparison.
Usage: python benchmarks/bench_worker.py [--images 120] [--latency 5 20 50] [--batch 1 4 8]
       [--ratio 640x480:2000 1600x1200:120] [--no-cells]
"""

from __future__ import annotations

import argparse
import atexit
import multiprocessing
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import harness

from tests import support
from tests.support.net import PrivateRedis

WARM = 4
STAGES = ("read", "decode", "preprocess", "postprocess", "encode", "write")


MATTE: Path | None = None  # the real model's matte of a real photo (tests/support/mattes.py), set by main()


class FakeDevice:
    """The overlapped worker's session with the device answering at once: CPU stages only. Its answer
    is a real model's matte (tests/support/mattes.py), mostly 0 and 255 with a thin soft band, so the
    edge steps cost what they cost on a photo."""

    def __init__(self):
        import cv2

        from cvunet_matting.model.manifest import builtin

        self.manifest, self.version = builtin("isnet-fp16"), "bench"
        height, width = self.manifest.size
        assert MATTE is not None
        matte = cv2.resize(cv2.imread(str(MATTE), cv2.IMREAD_GRAYSCALE), (width, height), interpolation=cv2.INTER_AREA)
        self.answer = matte.reshape(1, 1, height, width)

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


class ThreadClock:
    """Stands in for the `time` module of the stage code in a CPU-stages process: its stage timings
    become this thread's CPU time (the process runs OpenCV and the deflate on one thread), not wall
    time, which on a shared host counts the neighbours' work too."""

    perf_counter = staticmethod(time.thread_time)


def _cpu_stages(index: int) -> tuple[float, dict[str, float]]:
    """One image through the CPU stages; returns when it ended (this host's clock) and the CPU
    seconds of each stage (read and write included, inference excluded: the device's)."""
    from cvunet_matting.config import get_settings
    from cvunet_matting.image import matting
    from cvunet_matting.malloc import tune_for_large_buffers
    from cvunet_matting.model import session
    from cvunet_matting.worker.device_client import one_thread_each

    tune_for_large_buffers()  # the workers' allocator settings (their image buffers are each mapped afresh)
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.storage.files import write_atomic

    matting.time = session.time = ThreadClock  # type: ignore[assignment]  (this bench process only)
    clock = time.thread_time()
    data = (harness.ROOT / "cpu-in" / f"{index:04d}.jpg").read_bytes()
    read = time.thread_time() - clock
    # As in the overlapped worker's pool processes: one thread each, the processes are the parallelism;
    # the raw matte kept beside the result, as the worker keeps it.
    result = matting.matte_bytes(data, OutputOptions(), FakeDevice(), one_thread_each(get_settings()), keep_raw=True)
    clock = time.thread_time()
    write_atomic(harness.ROOT / "cpu-out" / f"{index:04d}.png", result.data)
    if result.raw_matte is not None:
        write_atomic(harness.ROOT / "cpu-out" / f".{index:04d}.raw.png", result.raw_matte)
    stages = {**result.timings, "read": read, "write": time.thread_time() - clock}
    stages.pop("inference", None)
    return time.perf_counter(), stages


def start_cpu_pool() -> ProcessPoolExecutor:
    """One process per core, forked before this process uses OpenCV: its thread pool does not survive
    a fork (setting its size in the child would then wait forever for threads it lost)."""
    cores = len(os.sched_getaffinity(0))
    pool = ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("fork"))
    list(pool.map(time.sleep, [0] * cores))  # a fork pool starts all its processes at the first call
    return pool


def cpu_bound(pool: ProcessPoolExecutor, images: list[bytes]) -> float:
    """Images/s of the CPU stages alone, one process per core, as the pool's processes do them."""
    return cpu_stages(pool, images)[0]


def cpu_stages(pool: ProcessPoolExecutor, images: list[bytes]) -> tuple[float, dict[str, float]]:
    """Images/s of the CPU stages alone (one process per core, as the pool's processes do them), and
    the median CPU milliseconds per image of each stage."""
    (harness.ROOT / "cpu-in").mkdir(exist_ok=True)
    (harness.ROOT / "cpu-out").mkdir(exist_ok=True)
    for index, data in enumerate(images):
        (harness.ROOT / "cpu-in" / f"{index:04d}.jpg").write_bytes(data)
    list(pool.map(_cpu_stages, range(len(os.sched_getaffinity(0)))))  # warm: imports, allocator
    started = time.perf_counter()
    finished = list(pool.map(_cpu_stages, range(len(images))))
    rate = len(images) / (max(end for end, _ in finished) - started)
    medians = {name: 1000 * statistics.median(st[name] for _, st in finished) for name in STAGES}
    medians["mean sum"] = 1000 * statistics.mean(sum(st[name] for name in STAGES) for _, st in finished)
    return rate, medians


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


@dataclass
class WorkerRun:
    rate: float  # images/s, from the first finished image to the last
    batch: str  # the device's mean batch size as it logged it
    cpu_s: float  # CPU seconds of the worker's process tree (main, pool, device) over the measured images
    main_s: float = 0.0  # of which the worker's main process (consumer, acks, events, heartbeats)
    device_s: float = 0.0  # and its device process
    redis_s: float = 0.0  # CPU seconds of the benchmark's own redis-server meanwhile
    postgres_s: float = 0.0  # CPU seconds of the PostgreSQL backends serving this benchmark's database


def servers_cpu() -> tuple[float, float]:
    """CPU seconds so far of this benchmark's private redis-server and of the PostgreSQL backends
    connected to its database now (the workers' pooled connections live through a run)."""
    from cvunet_matting import db

    with db.transaction() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        backends = [row["pid"] for row in cur.fetchall()]
    redis_s = harness.cpu_seconds([PRIVATE_REDIS.proc.pid])[0] if PRIVATE_REDIS and PRIVATE_REDIS.proc else 0.0
    return redis_s, sum(harness.cpu_seconds(backends))


PRIVATE_REDIS: PrivateRedis | None = None


def through_worker(images: list[bytes], latency_ms: float, batch: int | None, tag: str) -> tuple[float, str]:
    """Images/s of one worker (batch None: today's loop), from its first finished image to its last;
    and the device's mean batch size as it logged it."""
    run = worker_run(images, latency_ms, batch, tag)
    return run.rate, run.batch


def worker_run(
    images: list[bytes], latency_ms: float, batch: int | None, tag: str, env: dict | None = None
) -> WorkerRun:
    """One worker (batch None: today's loop) matting `images` as one batch, ZIP and manifest included."""
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.pipeline.submission import Item, submit_batch

    env = support.simulated_device_env(harness.ROOT / "sim", latency_ms, matte=MATTE) | (env or {})
    env |= {"CVUNET_OVERLAP": "1" if batch else "0", "CVUNET_MAX_BATCH": str(batch or 1)}
    proc = support.start_worker(f"{tag}@%h", harness.ROOT / "logs", env)
    try:
        clear_results()
        warm_id = submit_batch([Item(f"warm{i}.jpg", d) for i, d in enumerate(images[:WARM])], OutputOptions())
        support.wait_until(lambda: successes(warm_id) == WARM, 300, message="warm-up")
        support.wait_until(lambda: support.batch_row(warm_id)["state"] == "done", 120, message="warm-up's ZIP")
        clear_results()
        batch_id = submit_batch([Item(f"{tag}-{i}.jpg", d) for i, d in enumerate(images)], OutputOptions())
        # From the submission's end: its own Redis and PostgreSQL work is the web side's, not the queue's.
        cpu_before, servers_before = harness.cpu_seconds([proc.pid])[0], servers_cpu()
        main = main_pid(proc.pid)
        main_before, device_before = own_cpu(main), own_cpu(device_pid(main))
        support.wait_until(lambda: successes(batch_id) == len(images), 3600, interval=0.5, message=tag)
        cpu_s = harness.cpu_seconds([proc.pid])[0] - cpu_before
        main_s, device_s = own_cpu(main) - main_before, own_cpu(device_pid(main)) - device_before
        servers = [after - before for after, before in zip(servers_cpu(), servers_before, strict=True)]
        support.wait_until(lambda: support.batch_row(batch_id)["state"] == "done", 600, message=f"{tag}'s ZIP")
    finally:
        support.kill_group(proc)
    finished = sorted(r["finished_at"] for r in support.rows_of(batch_id))
    rate = (len(finished) - 1) / (finished[-1] - finished[0]).total_seconds()
    sizes = re.findall(r"device: \d+ images in \d+ runs, ([\d.]+) per run", proc.log_path.read_text())
    return WorkerRun(rate, sizes[-1] if sizes else "-", cpu_s, main_s, device_s, *servers)


def main_pid(pid: int) -> int:
    """The Celery main process: `pid` itself, or its one child when `pid` is a wrapper."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    return pid if b"celery" in command or len(children) != 1 else int(children[0])


def device_pid(main: int) -> int:
    """The worker's device process (0: none, as in today's loop)."""
    for child in Path(f"/proc/{main}/task/{main}/children").read_text().split():
        if b"device_server" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    return 0


def own_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` alone, its children left out (0: no process)."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def through_cli(images: list[bytes], latency_ms: float, tag: str) -> tuple[float, float]:
    """The local CLI (`cvunet-matting matte FOLDER -o OUT`, one process, no queue) on the same
    images and the same simulated device: images/s from its first written result to its last (its
    start-up, the model's load, is left out as the worker's is), and its CPU seconds per image."""
    folder = harness.ROOT / f"{tag}-in"
    folder.mkdir()
    for index, data in enumerate(images):
        (folder / f"{index:05d}.jpg").write_bytes(data)
    out = harness.ROOT / f"{tag}-out"
    env = {**os.environ, **support.simulated_device_env(harness.ROOT / "sim", latency_ms, matte=MATTE)}
    env["CVUNET_DEVICE"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join((str(support.REPO), env["PYTHONPATH"]))
    command = [sys.executable, "-m", "cvunet_matting.commands.cli", "matte", str(folder), "-o", str(out)]
    started = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, env=env, cwd=support.REPO, check=True, capture_output=True, timeout=3600)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (ended.ru_utime + ended.ru_stime) - (started.ru_utime + started.ru_stime)
    written = sorted(path.stat().st_mtime_ns for path in out.rglob("*.png"))
    assert len(written) == len(images), f"the CLI wrote {len(written)} of {len(images)}"
    shutil.rmtree(folder)
    shutil.rmtree(out)
    return (len(written) - 1) / ((written[-1] - written[0]) / 1e9), cpu_s / len(images)


def parse_size(text: str) -> tuple[int, int, int]:
    """'640x480:2000' -> (width, height, images)."""
    size, _, count = text.partition(":")
    width, height = (int(v) for v in size.split("x"))
    return width, height, int(count or 120)


def measure_ratio(pool: ProcessPoolExecutor, width: int, height: int, count: int, latency: float) -> None:
    """The overlapped worker (production defaults) against the local CLI on the same photos and the
    same simulated device, back to back, and the CPU stages' own cost per image."""
    images = harness.photos(count, height, width)
    _, stages = cpu_stages(pool, images[: min(40, count)])
    stages_mean = stages.pop("mean sum")
    cpu_line = ", ".join(f"{name} {ms:.1f}" for name, ms in stages.items())
    print(
        f"{width}x{height}: host CPU ms per image (one thread, median): {cpu_line}; sum {sum(stages.values()):.1f}"
        f" (mean of the sums {stages_mean:.1f})"
    )
    tag = f"r{width}x{height}"
    cli_rate, cli_cpu = through_cli(images, latency, f"{tag}cli")
    run = worker_run(images, latency, overlap_of_defaults(), f"{tag}w")
    worker_ms, main_ms, device_ms, redis_ms, postgres_ms = (
        1000 * v / count for v in (run.cpu_s, run.main_s, run.device_s, run.redis_s, run.postgres_s)
    )
    pool_ms = worker_ms - main_ms - device_ms
    queue_ms = worker_ms + redis_ms + postgres_ms - 1000 * cli_cpu
    print(
        f"{width}x{height}, {count} photos, device {latency:g} ms: CLI {cli_rate:.2f} img/s, overlapped worker"
        f" {run.rate:.2f} img/s (batch {run.batch}): worker/CLI **{run.rate / cli_rate:.2f}**; wall ms an image"
        f" {1000 / run.rate:.1f} against {1000 / cli_rate:.1f}",
        flush=True,
    )
    print(
        f"{width}x{height}: CPU ms an image: CLI {1000 * cli_cpu:.1f}; worker's processes {worker_ms:.1f} (its main"
        f" process {main_ms:.1f}) + Redis"
        f" {redis_ms:.1f} + PostgreSQL {postgres_ms:.1f}; the queue's own (worker - CLI, the raw matte kept"
        f" included) **{queue_ms:.1f}**",
        flush=True,
    )
    print(
        f"{width}x{height}: the worker's CPU ms an image by process: main {main_ms:.1f}, device {device_ms:.1f}, pool"
        f" {pool_ms:.1f} (the CPU stages alone, one thread: {stages_mean:.1f}); main + Redis + PostgreSQL (the"
        f" queue's alone) **{main_ms + redis_ms + postgres_ms:.1f}**",
        flush=True,
    )


def model_matte_path() -> Path:
    """The real model's matte of the astronaut (computed once with the real model, then cached), found
    in a process of its own: this one must not load OpenCV or the model before its pools fork."""
    code = "from tests.support.mattes import model_matte_path; print(model_matte_path())"
    env = {k: v for k, v in os.environ.items() if k != "CVUNET_MODEL"}
    found = subprocess.run([sys.executable, "-c", code], env=env, cwd=support.REPO, check=True, capture_output=True)
    return Path(found.stdout.decode().strip().splitlines()[-1])


def overlap_of_defaults() -> int:
    """The overlapped worker's largest batch with the production defaults (CVUNET_MAX_BATCH)."""
    from cvunet_matting.config import get_settings

    return get_settings().max_batch


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
    parser.add_argument(
        "--ratio",
        nargs="*",
        default=["640x480:2000", "1600x1200:120"],
        help="WxH:N: the overlapped worker against the local CLI on N photos of that size (none: skip)",
    )
    parser.add_argument("--ratio-latency", type=float, default=2.0, help="ms per device run for the ratio runs")
    parser.add_argument("--no-cells", action="store_true", help="only the ratio runs, not the L x batch table")
    args = parser.parse_args()
    global PRIVATE_REDIS, MATTE
    MATTE = model_matte_path()
    # A redis-server of the benchmark's own (before anything reads the settings), whose CPU time is
    # this queue's alone: the shared one serves every other process on the host too.
    PRIVATE_REDIS = PrivateRedis().start()
    atexit.register(PRIVATE_REDIS.stop)
    os.environ["CVUNET_REDIS_URL"] = PRIVATE_REDIS.url
    os.environ["CVUNET_MODEL"] = str(support.build_isnet_shaped_model(harness.ROOT / "models" / "sim-isnet.onnx"))
    if args.in_flight:
        os.environ["CVUNET_IN_FLIGHT"] = str(args.in_flight)
    pool = start_cpu_pool()
    harness.setup()
    import cv2

    from tests.support.mattes import describe

    # Read from the file, not through mattes.model_matte(): CVUNET_MODEL now names the stand-in graph.
    alpha = cv2.resize(cv2.imread(str(MATTE), cv2.IMREAD_GRAYSCALE), (1600, 1200), interpolation=cv2.INTER_LINEAR)
    print(f"the simulated device answers with {MATTE.name}: at 1600x1200 {describe(alpha)}")
    for spec in args.ratio:
        measure_ratio(pool, *parse_size(spec), args.ratio_latency)
    if args.no_cells:
        pool.shutdown()
        return
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
