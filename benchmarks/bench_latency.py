"""`make bench-latency`: one image's end-to-end latency through Traefik vs the worker's own time (prints only).

In one run, for a worker with the real model on CPU and for a simulated device (the model's run
replaced by a sleep of L ms that holds no CPU, as a GPU's would: tests/support/device.py): 800x800
JPEGs uploaded one at a time (concurrency 1) and four at a time, by clients that wait (?wait=: the
server answers the moment the task ends) and by clients that poll as Retry-After says. For each it
prints the client's p50/p95 from upload to the final state (and with the download), the worker's
own per-task time (started_at to finished_at, from its rows) and the client's overhead over it.
Then the web tier's capacity for held requests: with the worker paused, N clients wait at once,
while plain status requests are timed; how many were held and how many refused (429).
With --rembg PYTHON, rembg's own server (`rembg s`) on the same ISNet fp16 file, same images.
Usage: python benchmarks/bench_latency.py [--images 20] [--concurrency 1 4] [--latency-ms 20]
       [--kinds real sim] [--modes wait poll] [--hold 120] [--rembg /tmp/rembg-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import harness

from tests import support
from tests.support import free_port, make_user
from tests.support.httpclient import fetch, matte_over_http, multipart

WAIT_S = 30


def isnet_path():
    models = os.environ.get("CVUNET_MODEL_DIR") or harness.Path.home() / ".cache/cvunet-matting/models"
    return harness.Path(models) / "isnet-fp16.onnx"


def quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def start_stack(worker_env: dict):
    from cvunet_matting.devstack.run import wait_ready
    from cvunet_matting.devstack.stack import Ports, Stack

    class BenchStack(Stack):
        def spawn(self, name, argv, secrets_env=None):
            extra = worker_env if name == "worker" else {}
            return super().spawn(name, argv, {**(secrets_env or {}), **extra})

    ports = Ports(http=free_port(), ping=free_port(), web=(free_port(), free_port()), flower=free_port())
    stack = BenchStack(harness.ROOT / f"stack-{time.time_ns()}", ports, workers=1)
    stack.start()
    wait_ready(stack.url, stack)
    stack.auth = make_user(prefix="latency").bearer
    return stack


def worker_times(result: dict) -> None:
    """The worker's own time for the task, and the client's time before it started and after it ended."""
    row = support.task_row(result["task_id"])
    started, finished = row["started_at"].timestamp(), row["finished_at"].timestamp()
    result["worker"] = finished - started
    result["before"] = started - result["sent_at"]
    result["after"] = result["sent_at"] + result["answered"] - finished


def run(stack, images: list[bytes], concurrency: int, mode: str, tag: str) -> list[dict]:
    wait = WAIT_S if mode == "wait" else None

    def one(item):
        index, data = item
        sent_at = time.time()
        result = matte_over_http(stack.url, f"{tag}-{index}.jpg", data, auth=stack.auth, wait=wait)
        return {**result, "sent_at": sent_at}

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, enumerate(images)))
    for result in results:
        if result["ok"]:
            worker_times(result)
    return results


def report(kind: str, concurrency: int, mode: str, results: list[dict]) -> None:
    good = [r for r in results if r["ok"]]
    if not good:
        print(f"{kind:<10} c={concurrency} {mode:<5} every request failed: {results[0].get('error')}", flush=True)
        return
    answered, total = quantiles([r["answered"] for r in good]), quantiles([r["latency"] for r in good])
    worker = quantiles([r["worker"] for r in good])
    over = quantiles([r["answered"] - r["worker"] for r in good])
    before, after = quantiles([r["before"] for r in good]), quantiles([r["after"] for r in good])
    polls = statistics.mean(r["polls"] for r in good)
    print(
        f"{kind:<10} c={concurrency} {mode:<5} n={len(good):<3} answered p50 {answered[0] * 1000:6.0f} "
        f"p95 {answered[1] * 1000:6.0f} ms | +download p50 {total[0] * 1000:6.0f} | worker p50 "
        f"{worker[0] * 1000:6.0f} p95 {worker[1] * 1000:6.0f} ms | over the worker p50 {over[0] * 1000:5.0f} "
        f"p95 {over[1] * 1000:5.0f} ms (before it p50 {before[0] * 1000:4.0f}, after it p50 {after[0] * 1000:4.0f} "
        f"p95 {after[1] * 1000:4.0f}) | {polls:.1f} status requests/image, errors {len(results) - len(good)}",
        flush=True,
    )


def web_rss_mb(stack) -> float:
    """Resident memory of the web instances' processes (gunicorn masters and their workers), in MB."""
    parents, rss = {}, {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = harness.Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry)] = int(fields["PPid"])
        rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0])
    web = {proc.pid for name, proc in stack.procs.items() if name.startswith("web")}
    web |= {pid for pid, parent in parents.items() if parent in web}
    return sum(rss[pid] for pid in web) / 1024


def held_capacity(stack, clients: int, image: bytes) -> None:
    """The worker paused: `clients` requests wait at once on unfinished tasks; plain requests timed meanwhile."""
    worker = stack.procs["worker"]
    os.killpg(worker.pid, signal.SIGSTOP)
    try:
        body, ctype = multipart("file", "held.jpg", image)
        status, raw, _ = fetch("POST", f"{stack.url}/api/v1/images", body, {"Content-Type": ctype, **stack.auth})
        task_url = f"{stack.url}/api/v1/tasks/" + json.loads(raw)["task_id"]
        idle_mb = web_rss_mb(stack)
        with ThreadPoolExecutor(clients) as pool:
            held = [pool.submit(fetch, "GET", f"{task_url}?wait=10", None, stack.auth, 60) for _ in range(clients)]
            time.sleep(3)  # let them arrive
            held_mb = web_rss_mb(stack)
            plain = []
            for _ in range(20):
                started = time.perf_counter()
                fetch("GET", task_url, headers=stack.auth)
                plain.append(time.perf_counter() - started)
            answers = [f.result()[0] for f in held]
        p50, p95 = quantiles(plain)
        refused = answers.count(429)
        print(
            f"held requests: {clients} at once -> {answers.count(200)} held to the bound, {refused} refused (429), "
            f"others {len(answers) - answers.count(200) - refused}; plain status meanwhile p50 {p50 * 1000:.0f} ms "
            f"p95 {p95 * 1000:.0f} ms; the web tier's RSS {idle_mb:.0f} MB idle, {held_mb:.0f} MB holding them",
            flush=True,
        )
    finally:
        os.killpg(worker.pid, signal.SIGCONT)


def rembg_run(python: str, images: list[bytes], concurrency: int) -> None:
    """rembg's server on the same ISNet fp16 file: POST /api/remove, the cut-out in the answer."""
    port = free_port()
    log = open(harness.ROOT / "rembg.log", "wb")  # noqa: SIM115 (closed below)
    # rembg opens custom models only from its own folder (U2NET_HOME): point it at ours.
    env = {**os.environ, "U2NET_HOME": str(isnet_path().parent)}
    proc = subprocess.Popen(
        [str(harness.Path(python).parent / "rembg"), "s", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    # rembg takes a custom ISNet as its dis_custom model, the file's path in the `extras` query parameter.
    url = f"http://127.0.0.1:{port}/api/remove?" + urllib.parse.urlencode(
        {"extras": json.dumps({"model_path": str(isnet_path())})}
    )
    try:
        support.wait_until(lambda: support.port_open(port), 120, message="rembg server")

        def one(data: bytes) -> tuple[int, float]:
            body, ctype = multipart("file", "a.jpg", data, {"model": "dis_custom"})
            started = time.perf_counter()
            status, _, _ = fetch("POST", url, body, {"Content-Type": ctype}, timeout=600)
            return status, time.perf_counter() - started

        one(images[0])  # load the model
        with ThreadPoolExecutor(concurrency) as pool:
            started = time.perf_counter()
            results = list(pool.map(one, images[1:]))
            elapsed = time.perf_counter() - started
        ok = [t for s, t in results if s == 200]
        if not ok:
            print(f"rembg      c={concurrency} every request failed ({results[0][0]}): see {log.name}", flush=True)
            return
        p50, p95 = quantiles(ok)
        print(
            f"rembg      c={concurrency} n={len(ok):<3} latency p50 {p50 * 1000:6.0f} p95 {p95 * 1000:6.0f} ms, "
            f"{len(ok) / elapsed:.2f} img/s, errors {len(results) - len(ok)}",
            flush=True,
        )
    finally:
        support.kill_group(proc)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20, help="per concurrency and mode")
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--latency-ms", type=float, default=20, help="the simulated device's run")
    parser.add_argument("--kinds", nargs="*", default=["sim", "real"], choices=["sim", "real"])
    parser.add_argument("--modes", nargs="*", default=["wait", "poll"], choices=["wait", "poll"])
    parser.add_argument("--hold", type=int, default=120, help="clients waiting at once (0: skip)")
    parser.add_argument("--rembg", help="a Python with rembg[cpu,cli] installed (never the project's .venv)")
    args = parser.parse_args()
    # held_capacity measures what the web processes hold, all from one user: that user's own cap
    # (CVUNET_WAITS_PER_USER, 8) raised to the clients it sends, or it would measure the cap instead.
    os.environ.setdefault("CVUNET_WAITS_PER_USER", str(max(args.hold, 8)))
    harness.setup()
    runs = len(args.kinds) * len(args.concurrency) * len(args.modes)
    images = harness.photos(runs * args.images + 8, 800, 800)  # distinct: a repeated image reuses its result
    print(f"{os.cpu_count()} cores; 800x800 JPEGs; {args.images} images per row; client ?wait={WAIT_S}")
    first = 0
    for kind in args.kinds:
        env = {}
        if kind == "sim":
            model = support.build_isnet_shaped_model(harness.ROOT / "models" / "sim-isnet.onnx")
            env = {"CVUNET_MODEL": str(model), **support.simulated_device_env(harness.ROOT / "sim", args.latency_ms)}
        name = f"sim {args.latency_ms:g}ms" if kind == "sim" else "real CPU"
        stack = start_stack(env)
        try:
            warm = images[-8:]
            run(stack, warm[:2] if kind == "sim" else warm[2:4], 1, "wait", f"warm-{kind}")
            for concurrency in args.concurrency:
                for mode in args.modes:
                    chunk = images[first : first + args.images]
                    first += args.images
                    report(name, concurrency, mode, run(stack, chunk, concurrency, mode, f"{kind}{concurrency}{mode}"))
            if args.hold and kind == "sim":
                held_capacity(stack, args.hold, warm[4])
        finally:
            stack.stop()
    if args.rembg:
        for concurrency in args.concurrency:
            rembg_run(args.rembg, images[: args.images + 1], concurrency)


if __name__ == "__main__":
    main()
