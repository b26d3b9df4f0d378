"""`make bench-http`: the whole stack through Traefik under concurrent clients vs the bare model.

In one run: bare in-process throughput, then the same kind of images through the queue alone (one
worker, no HTTP), then N concurrent clients each uploading, polling (as often as Retry-After says)
and downloading through Traefik (2 web instances, 1 CPU worker), then bare again. Prints throughput,
p50/p95 latency, the ratio to the mean bare figure and the HTTP layer's own cost (HTTP vs queue alone).
Usage: python benchmarks/bench_http.py [--images 200 --clients 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import harness
from bench_pipeline import bare, through_queue

from tests.support import free_port, make_user
from tests.support.httpclient import matte_over_http


def start_stack():
    from cvunet_matting.devstack.run import wait_ready
    from cvunet_matting.devstack.stack import Ports, Stack

    ports = Ports(http=free_port(), ping=free_port(), web=(free_port(), free_port()), flower=free_port())
    stack = Stack(harness.ROOT / "stack", ports, workers=1)
    stack.start()
    wait_ready(stack.url, stack)
    stack.auth = make_user(prefix="bench").bearer  # every API call needs a user's key
    return stack


def cpu_use(stack) -> dict[str, float]:
    """CPU seconds so far of each stack process, and of this process (the clients)."""
    used = harness.cpu_seconds([proc.pid for proc in stack.procs.values()])
    return {**dict(zip(stack.procs, used, strict=True)), "clients": time.process_time()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    harness.setup()
    n = args.images
    # Three disjoint sets (bare, queue, HTTP): a repeated image would reuse its earlier result.
    images = harness.photos(3 * n + 3, 256, 256)
    # The machine drifts over minutes: the baseline is the mean of bare runs before and after.
    before, _ = bare(images[:n])
    print(f"bare model, in-process, before: {before:.3f} images/s")
    # The same worker fed straight through Redis, no HTTP: what the HTTP layer adds is the difference.
    queued, _, _ = through_queue(images[2 * n + 1 : 3 * n + 3], 1, "q")
    print(f"through the queue alone (1 worker, no HTTP): {queued:.3f} images/s")
    stack = start_stack()
    try:
        # Warm the worker's model before timing.
        assert matte_over_http(stack.url, "warm.jpg", images[2 * n], auth=stack.auth)["ok"]
        jobs = images[n : 2 * n]
        cpu_before = cpu_use(stack)
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = list(
                pool.map(lambda p: matte_over_http(stack.url, f"img{p[0]}.jpg", p[1], auth=stack.auth), enumerate(jobs))
            )
        elapsed = time.perf_counter() - started
        cpu = {name: used - cpu_before[name] for name, used in cpu_use(stack).items()}
    finally:
        stack.stop()
    after, _ = bare(images[:n])
    print(f"bare model, in-process, after:  {after:.3f} images/s")
    base = (before + after) / 2
    latencies = sorted(r["latency"] for r in results)
    errors = sum(not r["ok"] for r in results)
    rate = len(jobs) / elapsed
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(f"through Traefik, {args.clients} clients, {len(jobs)} images: {rate:.3f} images/s, errors {errors}")
    polls = sum(r.get("polls", 0) for r in results)
    median = statistics.median(latencies)
    print(f"latency p50 {median:.2f}s p95 {p95:.2f}s; {polls / len(jobs):.1f} status polls per image")
    shares = ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())
    cores = os.cpu_count() or 1
    print(f"CPU seconds during the HTTP run ({elapsed:.0f} s wall, {cores} cores): {shares}")
    http_cpu = sum(seconds for name, seconds in cpu.items() if name != "worker")
    share = http_cpu / (elapsed * cores)
    print(f"the HTTP layer (web, Traefik, Flower, clients) used {share:.1%} of the machine's CPU")
    print(
        f"ratio to bare {rate / base:.3f} (queue alone {queued / base:.3f}); "
        f"the HTTP layer costs {1 - rate / queued:.1%} of the queue's throughput"
    )


if __name__ == "__main__":
    main()
