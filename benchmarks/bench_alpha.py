"""What /alpha costs a web process, before and after the matte is kept beside its result (prints; asserts nothing).

Before, every request decoded the whole RGBA cut-out and encoded its alpha (alpha_matte.alpha_png);
now the first request does that once and stores the file (alpha_matte.Derivations), later ones only
look at it. Also what writing the matte in the worker, for every task, would cost instead: the
encode of an alpha it already holds, and the bytes on disk. Each size runs in a fresh process with
the web's allocator settings; peak RSS is VmHWM, reset before each step (/proc/self/clear_refs).
The cut-outs are a smooth gradient with a feathered ellipse for a matte, written by the worker's own
PNG writer (a flat picture: 7000x7000 is ~0.2 MB on disk, as in the audit that found this).
Usage: python benchmarks/bench_alpha.py [--sizes 1024x1024 4000x3000 7000x7000] [--burst 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from cvunet_matting.image.encoding import PNG_LEVEL, OutputOptions, encode
from cvunet_matting.image.png import encode_png
from cvunet_matting.malloc import tune_for_large_buffers
from cvunet_matting.storage.files import alpha_path
from cvunet_matting.webapp import alpha_matte


def status_kb(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
    return int(line.split()[1])


def peak_mb(fn) -> tuple[float, float]:
    """Seconds `fn` took and how far it raised the peak RSS above the RSS before it, in MB."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS
    before = status_kb("VmRSS:")
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started, (status_kb("VmHWM:") - before) / 1024


def cut_out(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.meshgrid(np.linspace(0, 1, width, dtype=np.float32), np.linspace(0, 1, height, dtype=np.float32))
    rgb = np.stack([x * 255, y * 255, (1 - x) * 255], axis=-1).astype(np.uint8)
    alpha = np.zeros((height, width), np.uint8)
    cv2.ellipse(alpha, (width // 2, height // 2), (width // 3, height * 2 // 5), 0, 0, 360, 255, -1)
    return rgb, cv2.GaussianBlur(alpha, (0, 0), max(2.0, width / 400))


def median_of(step, repeat: int = 3) -> tuple[float, float]:
    """The median milliseconds of `repeat` runs of `step`, and the highest peak it raised, in MB."""
    times, peaks = zip(*(peak_mb(step) for _ in range(repeat)), strict=True)
    return statistics.median(times) * 1000, max(peaks)


def served(derivations: alpha_matte.Derivations, result: Path) -> bool:
    """One request's work: the matte's path (derived first if need be), or False where it was busy (503)."""
    try:
        return bool(derivations.matte(result))
    except alpha_matte.Busy:
        return False


def one_size(width: int, height: int, burst: int, folder: Path) -> dict:
    tune_for_large_buffers()
    rgb, alpha = cut_out(width, height)
    result = folder / "cut.png"
    result.write_bytes(encode(rgb, alpha, OutputOptions()))
    del rgb
    row: dict = {"size": f"{width}x{height}", "result_kb": result.stat().st_size / 1024}
    row["before_ms"], row["before_mb"] = median_of(lambda: alpha_matte.alpha_png(result))
    # Option (b): the worker encodes the alpha it holds anyway, for every task, asked for or not.
    row["worker_cv2_ms"] = median_of(lambda: cv2.imencode(".png", alpha))[0]
    row["worker_own_ms"] = median_of(lambda: encode_png(alpha, PNG_LEVEL))[0]
    row["matte_kb"] = len(alpha_matte.alpha_png(result)) / 1024
    row["matte_own_kb"] = len(encode_png(alpha, PNG_LEVEL)) / 1024
    derivations = alpha_matte.Derivations(2)
    row["first_ms"], row["first_mb"] = median_of(
        lambda: alpha_path(result).unlink(missing_ok=True) or served(derivations, result)
    )
    # Later requests: the check, then the file's bytes (what send_file reads; the page cache holds them).
    row["later_ms"], row["later_mb"] = median_of(
        lambda: served(derivations, result) and alpha_path(result).read_bytes(), 5
    )
    if burst:
        copies = [shutil.copyfile(result, folder / f"copy{n}.png") for n in range(burst)]
        with ThreadPoolExecutor(burst) as pool:
            row["burst_before"] = peak_mb(lambda: list(pool.map(alpha_matte.alpha_png, copies)))
            answers = []
            row["burst_first"] = peak_mb(lambda: answers.extend(pool.map(lambda c: served(derivations, c), copies)))
            row["burst_refused"] = answers.count(False)
            alpha_matte.WAIT_S = 60.0  # long enough for every one to wait its turn
            for copy in copies:
                alpha_path(copy).unlink(missing_ok=True)
            row["burst_queued"] = peak_mb(lambda: list(pool.map(lambda c: served(derivations, c), copies)))
            row["burst_later"] = peak_mb(lambda: list(pool.map(lambda c: served(derivations, c), copies)))
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", default=["1024x1024", "4000x3000", "7000x7000"])
    parser.add_argument("--burst", type=int, default=8, help="concurrent first requests on the largest size")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        width, height, burst = map(int, args.one.split(","))
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(one_size(width, height, burst, Path(folder))))
        return
    for size in args.sizes:
        width, height = map(int, size.split("x"))
        burst = args.burst if size == args.sizes[-1] else 0
        out = subprocess.run(
            [sys.executable, __file__, "--one", f"{width},{height},{burst}"], check=True, capture_output=True, text=True
        ).stdout
        r = json.loads(out)
        print(
            f"{r['size']}: result {r['result_kb']:.0f} KB, matte {r['matte_kb']:.0f} KB\n"
            f"  before, every GET: {r['before_ms']:.0f} ms, +{r['before_mb']:.0f} MB peak\n"
            f"  now, first GET: {r['first_ms']:.0f} ms, +{r['first_mb']:.0f} MB; "
            f"later GETs: {r['later_ms']:.2f} ms, +{r['later_mb']:.1f} MB\n"
            f"  option (b), in the worker for every task: {r['worker_cv2_ms']:.0f} ms (OpenCV, as served) or "
            f"{r['worker_own_ms']:.0f} ms (png.py, {r['matte_own_kb']:.0f} KB)"
        )
        if burst:
            (before_s, before_mb), (first_s, first_mb) = r["burst_before"], r["burst_first"]
            (queued_s, queued_mb), (later_s, later_mb) = r["burst_queued"], r["burst_later"]
            print(
                f"  {burst} concurrent GETs of {burst} results: before {before_s:.2f} s, +{before_mb:.0f} MB peak\n"
                f"    first GETs now, 2 slots, {alpha_matte.WAIT_S:.0f} s wait: {first_s:.2f} s, +{first_mb:.0f} MB, "
                f"{r['burst_refused']} answered 503\n"
                f"    the same, waiting as long as it takes: {queued_s:.2f} s, +{queued_mb:.0f} MB\n"
                f"    later GETs: {later_s * 1000:.1f} ms, +{later_mb:.1f} MB"
            )


if __name__ == "__main__":
    main()
