"""The queue's own CPU per image, before and after a change, in one run: two checkouts' workers alternating.

On a shared host one benchmark run against another says little (the neighbours' load moves both by more
than a queue change does). Here one process submits the same photos to a worker started from the
checkout BEFORE, then to one started from this checkout, in alternating order (A B B A ...), against the
same private redis-server, database and simulated device (2 ms, a real model's matte: as `make
bench-worker`), and prints for each round the CPU ms an image of the worker's main process, of Redis and
of the PostgreSQL backends serving it (what bench_worker.py calls the queue's alone), the Redis commands
and PostgreSQL transactions an image, then the medians and their ratio.

Usage: python benchmarks/bench_queue_ab.py BEFORE [--photos 400] [--pairs 4] [--size 640x480]
BEFORE: a checkout of the code before (`git worktree add --detach ../before main`); the schema is this
checkout's, so the two must share their migrations. Each worker imports the package of its own checkout
(its working directory comes first on sys.path).
"""

from __future__ import annotations

import argparse
import atexit
import os
import statistics
import time
from pathlib import Path

import bench_worker
import harness
import redis

from tests import support
from tests.support import processes
from tests.support.net import PrivateRedis

HERE = support.REPO


def commandstats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Each command's calls and microseconds inside Redis so far."""
    stats = client.info("commandstats").items()
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in stats}


def transactions() -> tuple[int, int]:
    """Transactions in this database so far, and rows of `tasks` updated (each a new row version)."""
    from cvunet_matting import db

    with db.transaction() as cur:
        cur.execute("SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()")
        xacts = int(cur.fetchone()["n"])
        cur.execute("SELECT n_tup_upd AS n FROM pg_stat_user_tables WHERE relname = 'tasks'")
        return xacts, int(cur.fetchone()["n"])


def one_round(tree: Path, images: list[bytes], tag: str, client: redis.Redis) -> dict:
    """One worker from `tree` on `images`: CPU ms an image by part, Redis calls and transactions an image."""
    processes.REPO = tree  # the worker's working directory, whose package it imports
    calls_before, xacts_before = commandstats(client), transactions()
    run = bench_worker.worker_run(images, 2.0, bench_worker.overlap_of_defaults(), tag)
    stats = {
        k: (calls - calls_before.get(k, (0, 0))[0], usec - calls_before.get(k, (0, 0))[1])
        for k, (calls, usec) in commandstats(client).items()
    }
    count = len(images)
    time.sleep(1.5)  # PostgreSQL's backends report their table counts at most once a second
    xacts_after = transactions()
    # The counts span the whole round (warm-up and the ZIP included): read them as a comparison only.
    per = {k: calls / (count + bench_worker.WARM) for k, (calls, _) in stats.items() if calls}
    usec = {k: spent / (count + bench_worker.WARM) for k, (_, spent) in stats.items() if spent}
    return {
        "usec": usec,
        "main": 1000 * run.main_s / count,
        "redis": 1000 * run.redis_s / count,
        "postgres": 1000 * run.postgres_s / count,
        "rate": run.rate,
        "calls": per,
        "xacts": (xacts_after[0] - xacts_before[0]) / (count + bench_worker.WARM),
        "updates": (xacts_after[1] - xacts_before[1]) / (count + bench_worker.WARM),
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path, help="a checkout of the code before")
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--size", default="640x480")
    args = parser.parse_args()
    before = args.before.resolve()
    assert (before / "cvunet_matting").is_dir(), f"{before} is no checkout"
    bench_worker.MATTE = bench_worker.model_matte_path()
    private = PrivateRedis().start()
    atexit.register(private.stop)
    bench_worker.PRIVATE_REDIS = private
    os.environ["CVUNET_REDIS_URL"] = private.url
    os.environ["CVUNET_MODEL"] = str(support.build_isnet_shaped_model(harness.ROOT / "models" / "sim-isnet.onnx"))
    harness.setup()
    client = redis.Redis.from_url(private.url)
    width, height = (int(v) for v in args.size.split("x"))
    images = harness.photos(args.photos, height, width)
    trees = {"before": before, "after": HERE}
    rounds: dict[str, list[dict]] = {"before": [], "after": []}
    for pair in range(args.pairs):
        order = ("before", "after") if pair % 2 == 0 else ("after", "before")
        for name in order:
            got = one_round(trees[name], images, f"ab{pair}{name}", client)
            rounds[name].append(got)
            queue = got["main"] + got["redis"] + got["postgres"]
            print(
                f"{name:>6} pair {pair}: main {got['main']:.2f} + Redis {got['redis']:.2f} + PostgreSQL"
                f" {got['postgres']:.2f} = **{queue:.2f}** ms an image; {got['rate']:.1f} img/s;"
                f" {sum(got['calls'].values()):.1f} Redis calls, {got['xacts']:.2f} transactions and"
                f" {got['updates']:.2f} task row updates an image;"
                f" load {got['load']:.1f}",
                flush=True,
            )
    print(f"{args.pairs} pairs of {args.photos} photos {args.size}, medians (ms an image):")
    medians = {}
    for name, runs in rounds.items():
        parts = {k: statistics.median(r[k] for r in runs) for k in ("main", "redis", "postgres")}
        medians[name] = statistics.median(r["main"] + r["redis"] + r["postgres"] for r in runs)
        line = ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
        print(f"{name:>6}: {line}; main + Redis + PostgreSQL **{medians[name]:.2f}**")
    print(f"after/before {medians['after'] / medians['before']:.2f}")
    print("Redis commands an image (medians, before -> after): calls, and microseconds inside Redis")
    names = sorted({k for runs in rounds.values() for r in runs for k in r["calls"]})
    for command in names:
        calls = {n: statistics.median(r["calls"].get(command, 0.0) for r in runs) for n, runs in rounds.items()}
        usec = {n: statistics.median(r["usec"].get(command, 0.0) for r in runs) for n, runs in rounds.items()}
        if max(calls.values()) >= 0.05:
            print(
                f"  {command:>24}: {calls['before']:6.2f} -> {calls['after']:6.2f} calls,"
                f" {usec['before']:7.1f} -> {usec['after']:7.1f} us"
            )


if __name__ == "__main__":
    main()
