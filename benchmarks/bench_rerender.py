"""`make bench-rerender`: what a re-render costs on the web side, and what keeping the raw matte costs
the worker.

The photo is scikit-image's astronaut, upscaled to 12 MP (4000x3000) and 1 MP (1224x816) and stored
as a JPEG (as a phone sends it); its raw matte is the real ISNet's (`make model`), kept as the worker
keeps it (image/rendering.py). For each size it prints:
- the raw matte: its size on disk, the worker's CPU to write it (medians; 1 thread and the workers'
  CVUNET_ENCODE_THREADS), beside the result's own size;
- a re-render as services/rerendering.py runs it (one thread: the input and the matte read from
  files once, decode, edge steps, encode): p50 and p90 wall time and the p50 CPU, for the defaults
  and for other options (JPEG on a colour, WebP, stronger edge controls).
Targets (issue #27): p50 under 500 ms at 12 MP, under 50 ms at 1 MP. Prints; asserts nothing.

Usage: python benchmarks/bench_rerender.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from cvunet_matting.config import get_settings
from cvunet_matting.image.edges import controls, refine
from cvunet_matting.image.encoding import OutputOptions, encode
from cvunet_matting.image.foreground import decontaminate
from cvunet_matting.image.imaging import decode
from cvunet_matting.image.input_alpha import read_alpha
from cvunet_matting.image.matting import matte_bytes
from cvunet_matting.image.rendering import raw_matte_png, read_raw_matte, render
from cvunet_matting.image.solid import solidify
from cvunet_matting.malloc import tune_for_large_buffers
from cvunet_matting.model.session import get_session
from cvunet_matting.services.rerendering import THREADS

SIZES = {"12 MP": (4000, 3000), "1 MP": (1224, 816)}
TARGETS_MS = {"12 MP": 500, "1 MP": 50}
OPTIONS = {
    "defaults (PNG, transparent)": OutputOptions(),
    "JPEG on white": OutputOptions.parse("jpg", "white"),
    "WebP, transparent": OutputOptions.parse("webp"),
    "thresholds 64/150, erode 2, feather 3": OutputOptions.parse(
        alpha_threshold="64", opaque_threshold="150", erode="2", feather="3"
    ),
}


def photo_jpeg(width: int, height: int) -> bytes:
    rgb = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def timed(step: Callable[[], object], repeat: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of each run, after one warm-up."""
    step()
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        walls.append((time.perf_counter() - wall) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return walls, cpus


def p(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def keeping_cost(alpha: np.ndarray, result: bytes, repeat: int, threads: int) -> None:
    matte = raw_matte_png(alpha)
    print(f"  raw matte: {len(matte) / 1024:.0f} KiB (the default result: {len(result) / 1024:.0f} KiB)")
    for n in sorted({1, threads}):
        walls, cpus = timed(lambda n=n: raw_matte_png(alpha, n), repeat)
        print(
            f"    written by the worker, {n} thread(s): {statistics.median(walls):6.1f} ms wall"
            f" {statistics.median(cpus):6.1f} ms CPU (medians)"
        )
    walls, _ = timed(lambda: read_raw_matte(matte, alpha.shape), repeat)
    print(f"    read back: {statistics.median(walls):6.1f} ms")


def rerender_cost(folder: Path, size: str, repeat: int, max_pixels: int) -> None:
    source, matte = folder / "input.jpg", folder / "raw.png"

    def once(options: OutputOptions, threads: int = THREADS) -> None:
        render(source.read_bytes(), matte.read_bytes(), options, max_pixels, threads)

    if THREADS != 1:  # the baseline, in the same run: the defaults on one thread
        walls, cpus = timed(lambda: once(OutputOptions(), 1), repeat)
        print(
            f"  re-render, {'defaults on 1 thread (baseline)':>40}: p50 {p(walls, 0.5):6.1f} ms  p90"
            f" {p(walls, 0.9):6.1f} ms wall, p50 {statistics.median(cpus):6.1f} ms CPU"
        )

    for name, options in OPTIONS.items():
        walls, cpus = timed(lambda o=options: once(o), repeat)
        target = TARGETS_MS[size] if name.startswith("defaults") else None
        verdict = f"  target < {target} ms: {'met' if p(walls, 0.5) < target else 'NOT met'}" if target else ""
        print(
            f"  re-render, {name:>40}: p50 {p(walls, 0.5):6.1f} ms  p90 {p(walls, 0.9):6.1f} ms wall,"
            f" p50 {statistics.median(cpus):6.1f} ms CPU{verdict}"
        )


def stages(jpeg: bytes, matte: bytes, repeat: int, max_pixels: int) -> None:
    """Where a default re-render's time goes (medians of wall ms), each step on its own input."""
    rgb = decode(jpeg, max_pixels)
    raw = read_raw_matte(matte, rgb.shape)
    refined = refine(rgb, raw)
    solid = solidify(refined)
    steps = {
        "decode the input": lambda: decode(jpeg, max_pixels),
        "its own alpha (none)": lambda: read_alpha(jpeg, rgb.shape[:2]),
        "read the raw matte": lambda: read_raw_matte(matte, rgb.shape),
        "refine": lambda: refine(rgb, raw),
        "solidify": lambda: solidify(refined),
        "controls (none)": lambda: controls(solid),
        "decontaminate": lambda: decontaminate(rgb.copy(), solid),
        "encode PNG": lambda: encode(rgb, solid, OutputOptions(), THREADS),
    }
    said = ", ".join(f"{name} {statistics.median(timed(step, repeat)[0]):.1f}" for name, step in steps.items())
    print(f"  where a default re-render's time goes (ms, medians): {said}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    tune_for_large_buffers()  # the allocator as the processes that re-render have it (web.create_app, the bookkeeper)
    settings = get_settings()
    session = get_session(settings)
    print(f"model {session.version}; re-renders on {THREADS} threads; workers encode on {settings.encode_threads}")
    for size, (width, height) in SIZES.items():
        jpeg = photo_jpeg(width, height)
        made = matte_bytes(jpeg, OutputOptions(), session, settings, keep_raw=True)
        assert made.raw_matte is not None
        alpha = read_raw_matte(made.raw_matte, (height, width))
        print(f"\n{size} ({width}x{height}, JPEG input {len(jpeg) / 1024:.0f} KiB):")
        keeping_cost(alpha, made.data, args.repeat, settings.encode_threads)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "input.jpg").write_bytes(jpeg)
            (folder / "raw.png").write_bytes(made.raw_matte)
            same = render(jpeg, made.raw_matte, OutputOptions(), settings.max_pixels, settings.encode_threads)
            print(f"  the defaults re-rendered == the worker's result: {same.data == made.data}")
            rerender_cost(folder, size, args.repeat, settings.max_pixels)
            stages(jpeg, made.raw_matte, args.repeat, settings.max_pixels)


if __name__ == "__main__":
    main()
