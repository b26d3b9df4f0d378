"""The load scenario: many concurrent clients through Traefik, images of many sizes, RSS before and after."""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import cv2
import harness
import numpy as np

from tests import support
from tests.support.httpclient import matte_over_http

SIDES = (64, 1600)


def image(seed: int, size: tuple[int, int] | None = None) -> bytes:
    """A JPEG of a random size (64 to 1600 px a side): gradients and noise, so sizes and content vary."""
    rng = np.random.default_rng(seed)
    height, width = size or (int(v) for v in rng.integers(*SIDES, 2))
    y, x = np.mgrid[0:height, 0:width]
    base = np.dstack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)]).astype(np.uint8)
    noisy = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (from /proc), in MiB."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def rss(stack) -> dict:
    return {name: tree_rss_mb(stack.procs[name].pid) for name in ("web1", "web2", "worker")}


def run_load(images: int, clients: int, deadline_s: float = 1800):
    from bench_http import start_stack
    from outcomes import Row

    from cvunet_matting import db

    tiny = support.build_tiny_model(harness.ROOT / "models" / "tiny-cvunet.onnx")
    os.environ["CVUNET_MODEL"] = str(tiny)  # the serving stack under load, not the CPU model speed
    stack = start_stack()
    try:
        # Warm-up: imports, pools, and the allocators' high-water marks for the largest and
        # smallest images, so "before" is a settled process and growth after it means a leak.
        corners = [(h, w) for h in SIDES for w in SIDES]
        for i, size in enumerate(corners * 3 + [None] * 8):
            matte_over_http(stack.url, f"warm{i}.jpg", image(10_000_000 + i, size), auth=stack.auth)
        before = rss(stack)
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            futures = [
                pool.submit(lambda i: matte_over_http(stack.url, f"load{i}.jpg", image(i), auth=stack.auth), i)
                for i in range(images)
            ]
            done, pending = wait(futures, timeout=deadline_s)
        elapsed = time.perf_counter() - started
        after = rss(stack)
    finally:
        stack.stop()
    results = [f.result() for f in done]
    latencies = sorted(r["latency"] for r in results if r["ok"])
    ok = len(latencies)
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n, count(DISTINCT input_key) AS k FROM tasks WHERE filename LIKE 'load%%'")
        counts = cur.fetchone()

    def pct(p: float) -> float:
        return latencies[int(p * (len(latencies) - 1))] if latencies else float("nan")

    growth = {k: (after[k] - before[k]) / before[k] for k in before}
    failures = Counter(f"{r['status']} {r.get('error')!r:.60}" for r in results if not r["ok"])
    note = (
        f"{ok / elapsed:.1f} img/s; p50 {statistics.median(latencies):.2f}s p95 {pct(0.95):.2f}s "
        f"p99 {pct(0.99):.2f}s; RSS MiB before/after "
        + ", ".join(f"{k} {before[k]:.0f}/{after[k]:.0f} ({growth[k]:+.1%})" for k in before)
        + f"; {len(pending)} unfinished at the deadline"
        + "".join(f"; {n} x {what}" for what, n in failures.items())
    )
    return Row(f"load: {clients} clients", images, ok, 0, images - ok, counts["n"] - counts["k"], note)
