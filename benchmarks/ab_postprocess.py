"""Postprocess host CPU of two trees, in alternating processes: this checkout against another (a git
worktree of an earlier commit), so the host's drift hits both alike. Each round runs the steps after the
model (benchmarks/cpu_stages.py: the stand-in's real ISNet matte upscaled, the score, the edge steps with
the defaults) 25 times in a fresh process of each tree, one thread, and keeps the median of the last 21.

With --pairs N it instead loads both trees' edge-step modules into one process and times them in N
interleaved pairs (the steps after the matte's upscale: the distance maps, the score, finish()): no
process start-up between them and the same warm caches, so steps worth 2% show above the host's noise.

Usage: python benchmarks/ab_postprocess.py ../base-worktree [--rounds 10] [--size 1600x1200] [--pairs 150]
       (git worktree add ../base-worktree <commit>; both trees use this checkout's virtual environment)
Prints each tree's medians per round, their medians and the per-round ratios (or, with --pairs, the two
medians and their ratio); asserts nothing.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

ONE_RUN = """
import statistics, sys, time
import cv2
from benchmarks.cpu_stages import StandIn, current_edges
from cvunet_matting.config import get_settings
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.imaging import decode
from cvunet_matting.malloc import tune_for_large_buffers
from tests.support.mattes import photo_jpeg

tune_for_large_buffers()
cv2.setNumThreads(1)
width, height = (int(v) for v in sys.argv[1].split("x"))
rgb = decode(photo_jpeg(width, height), get_settings().max_pixels)
session, options, spent = StandIn(), OutputOptions(), []
raw = session.infer(None)
for _ in range(25):
    copy, start = rgb.copy(), time.process_time()
    current_edges(session.postprocess(raw, height, width), copy, None, options)
    spent.append(time.process_time() - start)
print(1000 * statistics.median(spent[4:]))
"""


def one_run(tree: Path, size: str) -> float:
    done = subprocess.run(
        [sys.executable, "-c", ONE_RUN, size],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


def edge_modules(tree: Path) -> tuple[ModuleType, ModuleType, ModuleType]:
    """The tree's image.edges, image.solid and image.confidence, imported afresh from that tree (with
    the modules they import), then taken out of sys.modules so that another tree's can be loaded."""
    saved = {name: module for name, module in sys.modules.items() if name.startswith("cvunet_matting")}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    try:
        names = ("edges", "solid", "confidence")
        modules = tuple(importlib.import_module(f"cvunet_matting.image.{name}") for name in names)
    finally:
        sys.path.remove(str(tree))
        for name in [name for name in sys.modules if name.startswith("cvunet_matting")]:
            del sys.modules[name]
        sys.modules.update(saved)
    assert all(Path(module.__file__ or "").is_relative_to(tree) for module in modules), "imported from elsewhere"
    return modules  # type: ignore[return-value]


def in_process(trees: list[Path], size: str, pairs: int) -> None:
    """Both trees' steps after the upscale, one thread, interleaved pair by pair in this process."""
    sys.path.insert(0, str(trees[1]))  # this checkout's harness (benchmarks/, tests/support/)
    import cv2

    from benchmarks.cpu_stages import StandIn
    from cvunet_matting.config import get_settings
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.image.imaging import decode
    from cvunet_matting.malloc import tune_for_large_buffers
    from tests.support.mattes import photo_jpeg

    tune_for_large_buffers()
    cv2.setNumThreads(1)
    width, height = (int(v) for v in size.split("x"))
    rgb = decode(photo_jpeg(width, height), get_settings().max_pixels)
    session = StandIn()
    raw = session.postprocess(session.infer(None), height, width)
    loaded = [edge_modules(tree) for tree in trees]
    spent: list[list[float]] = [[], []]
    for _ in range(pairs + 10):  # the first ten pairs warm up and are left out
        for (edges, solid, confidence), times in zip(loaded, spent, strict=True):
            copy, start = rgb.copy(), time.process_time()
            maps = solid.distances(raw)
            confidence.confidence(raw, maps)
            edges.finish(copy, raw, None, OutputOptions(), maps)
            times.append(time.process_time() - start)
    base, this = (statistics.median(times[10:]) * 1000 for times in spent)
    print(f"after the upscale, {size}, ms of host CPU, medians of {pairs} interleaved pairs in one process")
    print(f"  base {trees[0]}: {base:.2f}\n  this {trees[1]}: {this:.2f}\n  this / base: {this / base:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", type=Path, help="the other tree (a worktree of the commit to compare with)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--size", default="1600x1200")
    parser.add_argument("--pairs", type=int, default=0, help="compare in one process, this many pairs")
    args = parser.parse_args()
    trees = [args.base.resolve(), Path(__file__).resolve().parents[1]]
    if args.pairs:
        in_process(trees, args.size, args.pairs)
        return
    spent: dict[Path, list[float]] = {tree: [] for tree in trees}
    for round_ in range(args.rounds):
        for tree in trees if round_ % 2 == 0 else trees[::-1]:
            spent[tree].append(one_run(tree, args.size))
    base, this = spent[trees[0]], spent[trees[1]]
    ratios = [b / a for a, b in zip(base, this, strict=True)]
    print(f"postprocess {args.size}, ms of host CPU, median of 21 per round")
    print(f"  base {trees[0]}: {[round(v, 1) for v in base]}, median {statistics.median(base):.1f}")
    print(f"  this {trees[1]}: {[round(v, 1) for v in this]}, median {statistics.median(this):.1f}")
    print(f"  this / base per round: {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
