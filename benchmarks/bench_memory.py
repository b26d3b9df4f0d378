"""The CPU worker's resident memory with ISNet fp16, by onnxruntime SessionOptions (prints; asserts nothing).

For each candidate set of options and each image size (800x800 and 12 MP JPEGs), a fresh process
builds the model's session exactly as cvunet_matting.model.session does (MattingSession), with the candidate
laid over its SessionOptions, then mattes three images through the worker's own path (decode,
model, edges, PNG encode: matting.matte_bytes); and a mixed series (12 MP, 800x800, 3 MP in turn,
three times). It reports the RSS once the session is loaded, the peak RSS (VmHWM) over the images,
the RSS after them, and the median inference time, so memory is never bought with speed unseen.
All candidates run in the same invocation, one after another.
Usage: python benchmarks/bench_memory.py [--images 3] [--only baseline lean]
       python benchmarks/bench_memory.py --speed 5 --only baseline lean   (inference time, interleaved)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# name -> (SessionOptions attributes, session config entries, what it changes)
CANDIDATES = {
    "baseline": ({}, {}, "the worker as it is (session.cpu_memory_plan): CPU arena on, no memory-pattern block"),
    "arena+pattern": (
        {"enable_cpu_mem_arena": True, "enable_mem_pattern": True},
        {},
        "onnxruntime's defaults: the arena keeps the pattern block too",
    ),
    "no-arena": (
        {"enable_cpu_mem_arena": False, "enable_mem_pattern": True},
        {},
        "CVUNET_CPU_ARENA=0: activations malloc'd and freed per run",
    ),
    "no-arena-no-pattern": ({"enable_cpu_mem_arena": False, "enable_mem_pattern": False}, {}, "both"),
    "no-prepack": ({}, {"session.disable_prepacking": "1"}, "weights not copied into GEMM-packed form"),
    "init-outside-arena": (
        {},
        {"session.use_device_allocator_for_initializers": "1"},
        "weights allocated outside the arena",
    ),
    "arena-exact": (
        {},
        {"session.use_env_allocators": "1"},
        "a shared CPU arena that grows by what is asked (kSameAsRequested), not by powers of two",
    ),
    "lean": (
        {"enable_cpu_mem_arena": False, "enable_mem_pattern": False},
        {"session.disable_prepacking": "1"},
        "no arena, no pattern, no prepacking",
    ),
    "lean-extended": (
        {"enable_cpu_mem_arena": False, "enable_mem_pattern": False, "graph_optimization_level": "ORT_ENABLE_EXTENDED"},
        {},
        "no arena, no pattern, no NCHWc layout (its reordered fp32 weight copies)",
    ),
}
# (height, width) of the images, in turn: the mixed series is what fragments a heap or an arena.
SIZES = {"800x800": [(800, 800)], "12MP": [(3000, 4000)], "mixed": [(3000, 4000), (800, 800), (1500, 2000)]}


def photos(count: int, height: int, width: int) -> list[bytes]:
    """Distinct JPEGs (shifted crops of skimage's astronaut), made here: harness would claim a Redis
    database and a PostgreSQL name that this script, which needs neither, would never give back."""
    import cv2
    from skimage import data

    base = cv2.resize(data.astronaut(), (width + count, height), interpolation=cv2.INTER_AREA)
    crops = (base[:, i : i + width, ::-1].copy() for i in range(count))
    return [cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for crop in crops]


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def register_exact_arena(ort) -> None:
    """The process's CPU arena, growing by what is asked: sessions use it with session.use_env_allocators."""
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    # max_mem 0 (no limit), arena_extend_strategy 1 (kSameAsRequested), the rest onnxruntime's defaults
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))


def options_for(ort, name: str, threads: int):
    """SessionOptions as model/session.py sets them (its defaults), with the candidate laid over them."""
    from cvunet_matting.config import get_settings
    from cvunet_matting.model.providers import CPU
    from cvunet_matting.model.session import cpu_memory_plan

    attributes, entries, _ = CANDIDATES[name]
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena, options.enable_mem_pattern = cpu_memory_plan(get_settings().cpu_arena, CPU)
    for key, value in attributes.items():
        setattr(options, key, getattr(ort.GraphOptimizationLevel, value) if isinstance(value, str) else value)
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    return options


def speed(names: list[str], runs: int) -> None:
    """Inference time of each candidate in one process, their runs interleaved (A B C A B C...), so
    that a shared host's drift falls on all of them alike; memory is not measured here."""
    import onnxruntime as ort

    from cvunet_matting.config import get_settings
    from cvunet_matting.malloc import tune_for_large_buffers
    from cvunet_matting.model.session import resolve_model

    tune_for_large_buffers()  # as the worker does: without the arena, each run's buffers are fresh mappings
    path, _ = resolve_model(get_settings())
    if any("session.use_env_allocators" in CANDIDATES[name][1] for name in names):
        register_exact_arena(ort)
    sessions = {name: ort.InferenceSession(str(path), options_for(ort, name, 0)) for name in names}
    first = next(iter(sessions.values()))
    meta = first.get_inputs()[0]
    kind = np.float16 if meta.type == "tensor(float16)" else np.float32
    feed = {meta.name: np.random.default_rng(0).random(meta.shape, dtype=np.float32).astype(kind)}
    times = {name: [] for name in names}
    for session in sessions.values():
        session.run(None, feed)  # warm
    for _ in range(runs):
        for name, session in sessions.items():
            started = time.perf_counter()
            session.run(None, feed)
            times[name].append(time.perf_counter() - started)
    for name in names:
        print(f"{name:<20} inference median {statistics.median(times[name]):.2f} s over {runs} interleaved runs")


def child(name: str, size: str, count: int) -> dict:
    """In a fresh process: load the session with the candidate's options, matte `count` images."""
    import onnxruntime as ort

    attributes, entries, _ = CANDIDATES[name]
    real = ort.InferenceSession

    def with_candidate(source, sess_options=None, providers=None, **kwargs):
        for key, value in attributes.items():
            setattr(sess_options, key, getattr(ort.GraphOptimizationLevel, value) if isinstance(value, str) else value)
        for key, value in entries.items():
            sess_options.add_session_config_entry(key, value)
        return real(source, sess_options=sess_options, providers=providers, **kwargs)

    ort.InferenceSession = with_candidate
    if "session.use_env_allocators" in entries:
        register_exact_arena(ort)
    from cvunet_matting.config import get_settings
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.image.matting import matte_bytes
    from cvunet_matting.malloc import tune_for_large_buffers
    from cvunet_matting.model.session import get_session

    tune_for_large_buffers()  # as the worker does
    settings = get_settings()
    session = get_session(settings)
    loaded = status_kb("VmRSS")
    shapes = SIZES[size]
    images = [photos(1, *shapes[i % len(shapes)])[0] for i in range(count * len(shapes))]
    inference = []
    for data in images:  # the mixed series runs three times as many, one of each size in turn
        result = matte_bytes(data, OutputOptions(), session, settings)
        inference.append(result.timings["inference"])
    return {
        "loaded_mb": loaded / 1024,
        "peak_mb": status_kb("VmHWM") / 1024,
        "after_mb": status_kb("VmRSS") / 1024,
        "inference_s": statistics.median(inference),
        "model": str(session.path.name),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES))
    parser.add_argument("--child", nargs=2, metavar=("CANDIDATE", "SIZE"))
    parser.add_argument("--speed", type=int, default=0, help="only time inference, this many interleaved runs")
    args = parser.parse_args()
    if args.speed:
        speed(args.only, args.speed)
        return
    if args.child:
        print(json.dumps(child(*args.child, args.images)))
        return
    print(f"{'options':<20} {'size':>8} {'loaded MB':>10} {'peak MB':>8} {'after MB':>9} {'infer s':>8}  change")
    for name in args.only:
        for size in SIZES:
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, size, "--images", str(args.images)],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode:
                print(f"{name:<20} {size:>8} failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{name:<20} {size:>8} {row['loaded_mb']:10.0f} {row['peak_mb']:8.0f} {row['after_mb']:9.0f} "
                f"{row['inference_s']:8.2f}  {CANDIDATES[name][2]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
