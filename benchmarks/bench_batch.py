"""`make bench-batch`: a 10,000-image folder batch end to end through the queue, with a tiny model.

Prints (never asserts): per-image cost over the first 100 images and over the whole batch, the
worker's resident memory at the start and the end, and the finalize step's time and peak memory for
a small batch and the large one (the archive is streamed to disk, so it should not grow with the
batch). The ZIP is opened and checked against the manifest.
Usage: python benchmarks/bench_batch.py [--images 10000] [--small 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import zipfile

import harness
from loadtest import tree_rss_mb

from tests import support
from tests.support import batch_row, rows_of

BOOKKEEPER = {"CVUNET_WORKER_ROLE": "bookkeeping", "CUDA_VISIBLE_DEVICES": ""}


def make_folder(count: int, name: str) -> str:
    """`count` distinct small photos under the allowed root."""
    from cvunet_matting.config import get_settings

    folder = get_settings().allowed_roots[0] / name
    folder.mkdir(parents=True)
    for i, data in enumerate(harness.photos(count, 96, 128)):
        (folder / f"{i:05d}.jpg").write_bytes(data)
    return str(folder)


class RssSampler(threading.Thread):
    """Every 0.2 s: the model worker's RSS (its peak) and the bookkeeper's while the batch finalizes,
    and when the folder's listing ended."""

    def __init__(self, worker_pid: int, books_pid: int, batch_id: str):
        super().__init__(daemon=True)
        self.pid, self.books_pid, self.batch_id = worker_pid, books_pid, batch_id
        self.peak = self.finalize_peak = self.before_finalize = 0.0
        self.listed_at = None
        self.matting: list[float] = []  # every sample while images were matted
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            rss = tree_rss_mb(self.pid)
            self.peak = max(self.peak, rss)
            state = batch_row(self.batch_id)["state"]
            if state != "listing" and self.listed_at is None:
                self.listed_at = time.monotonic()
            if state == "finalizing":
                self.finalize_peak = max(self.finalize_peak, tree_rss_mb(self.books_pid))
            elif not self.finalize_peak:
                self.before_finalize = rss  # the last figure while images were matted
                self.matting.append(rss)


def run_batch(worker, books, count: int, name: str) -> dict:
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.pipeline.submission import submit_folder

    folder = make_folder(count, name)
    rss_before = tree_rss_mb(worker.pid)
    started = time.monotonic()
    batch_id = submit_folder(folder, OutputOptions())
    answered = time.monotonic() - started
    sampler = RssSampler(worker.pid, books.pid, batch_id)
    sampler.start()
    batch = support.wait_until(
        lambda: (b := batch_row(batch_id))["state"] == "done" and b, 6 * 3600, interval=1, message="batch"
    )
    sampler.stopped.set()
    sampler.join()
    rows = rows_of(batch_id)
    return {
        "count": count,
        "rows": rows,
        "batch": batch,
        "submit_s": answered,
        "listing_s": (sampler.listed_at or time.monotonic()) - started,
        "rss_before": rss_before,
        "rss_after": tree_rss_mb(worker.pid),
        "rss_peak": sampler.peak,
        "rss_before_finalize": sampler.before_finalize,
        "rss_samples": sampler.matting,
        "finalize_peak": sampler.finalize_peak,
        "finalize_s": (batch["finished_at"] - batch["finalizing_since"]).total_seconds(),
    }


def per_image(rows: list[dict], first: int | None = None) -> tuple[float, float]:
    """(seconds between completions, median seconds a worker spent on one image), over the first
    `first` images to finish (default: all). Counted from the first completion, so the time spent
    storing the batch's inputs before any image could run is left out."""
    done = sorted((r for r in rows if r["finished_at"] and r["started_at"]), key=lambda r: r["finished_at"])
    done = done[:first] if first else done
    spent = [(r["finished_at"] - r["started_at"]).total_seconds() for r in done]
    span = (done[-1]["finished_at"] - done[0]["finished_at"]).total_seconds()
    return span / (len(done) - 1), statistics.median(spent)


def check_zip(result: dict) -> str:
    from cvunet_matting.config import get_settings

    with zipfile.ZipFile(get_settings().data_dir / result["batch"]["zip_path"]) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        bad = archive.testzip()
    succeeded = {r["output_path"].rsplit("/", 1)[1] for r in result["rows"] if r["state"] == "success"}
    ok = names == succeeded | {"manifest.json"} and len(manifest["items"]) == result["count"] and bad is None
    return f"{len(names) - 1} entries, manifest {len(manifest['items'])} items, CRCs {'ok' if bad is None else bad}" + (
        "" if ok else "  MISMATCH"
    )


def _settings():
    from cvunet_matting.config import get_settings

    return get_settings()


def start_workers(name: str):
    """As `cvunet-matting worker` runs them, with the tiny model: the model worker mattes, the
    bookkeeper lists and finalizes. Stop both with support.kill_group."""
    model = support.build_tiny_model(harness.ROOT / "models" / "tiny-cvunet.onnx")
    worker = support.start_worker(f"{name}@%h", harness.ROOT / "logs", {"CVUNET_MODEL": str(model)}, "matting")
    return worker, support.start_worker("books@%h", harness.ROOT / "logs", BOOKKEEPER, "bookkeeping")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000)
    args = parser.parse_args()
    harness.setup()
    worker, books = start_workers("batch0")
    try:
        small = run_batch(worker, books, args.small, "small")
        large = run_batch(worker, books, args.images, "large")
    finally:
        support.kill_group(worker)
        support.kill_group(books)
    for result in (small, large):
        print(
            f"{result['count']}-image folder: the request answered in {result['submit_s'] * 1000:.0f} ms;"
            f" listed (inputs stored, rows recorded) in {result['listing_s']:.1f} s"
        )
    wall_100, median_100 = per_image(large["rows"], 100)
    wall_all, median_all = per_image(large["rows"])
    print(f"\n{args.images}-image folder batch, one CPU worker, tiny model:")
    for label, wall, median in (("first 100", wall_100, median_100), ("all", wall_all, median_all)):
        print(
            f"  per image, {label:<9}: {wall * 1000:.1f} ms between completions ({median * 1000:.1f} ms in the worker)"
        )
    print(f"  ratio all / first 100: {wall_all / wall_100:.3f} (wall), {median_all / median_100:.3f} (worker)")
    before, matted, after = large["rss_before"], large["rss_before_finalize"], large["rss_after"]
    print(
        f"  worker RSS: {before:.0f} MiB at the start, {matted:.0f} after the last image ({matted / before - 1:+.1%}),"
        f" {after:.0f} after finalize ({after / before - 1:+.1%})"
    )
    # Pool processes are replaced every CVUNET_MAX_TASKS_PER_CHILD tasks, so a single reading depends on
    # where in that cycle it falls (a fresh process, or two for a moment while one replaces the other):
    # the median of the first and of the last tenth of the samples taken while images were matted.
    tenth = max(1, len(large["rss_samples"]) // 10)
    first, last = (statistics.median(part) for part in (large["rss_samples"][:tenth], large["rss_samples"][-tenth:]))
    print(
        f"  worker RSS, median of the first / last tenth of the run: {first:.0f} / {last:.0f} MiB"
        f" ({last / first - 1:+.1%}); {len(large['rss_samples'])} samples, max {max(large['rss_samples']):.0f} MiB"
    )
    for result in (small, large):
        peak = f"{result['finalize_peak']:.0f} MiB" if result["finalize_peak"] else "not sampled (under 0.2 s)"
        print(
            f"  finalize, {result['count']} images: {result['finalize_s']:.2f} s, bookkeeper RSS finalizing: {peak}"
            f" (model worker's peak over the batch {result['rss_peak']:.0f} MiB); ZIP: {check_zip(result)}"
        )


if __name__ == "__main__":
    main()
