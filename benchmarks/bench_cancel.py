"""How long a cancelled batch takes to end (prints; asserts nothing).

A folder of N small photos runs on one CPU worker with the tiny model; once its listing is over and
its first image is done, it is cancelled: "before" as cancelling did until now (every waiting image
marked, each ended by the worker when its message arrives, chunk after chunk), "now" with
cancelling.cancel (every waiting image ends in PostgreSQL at once; the chain skips undispatched chunks). Printed: the
seconds from the cancel to the batch's end, and how many cancelled images reached a worker.
Usage: python benchmarks/bench_cancel.py [--images 2000]
"""

from __future__ import annotations

import argparse
import time

import harness
from bench_batch import make_folder, start_workers

from tests import support
from tests.support import batch_row, rows_of


def cancel_as_before(client, batch_id: str) -> None:
    from cvunet_matting import db
    from cvunet_matting.db import reads
    from cvunet_matting.pipeline import cancelling

    client.set(cancelling.CANCELLED + f"batch:{batch_id}", 1, ex=cancelling.TTL_S)
    with db.transaction() as cur:
        ids = reads.not_started(cur, batch_id=batch_id)
    for task_id in ids:  # Redis marks only: each row ended when its message reached a worker
        client.set(cancelling.CANCELLED + task_id, 1, ex=cancelling.TTL_S)


def run(count: int, name: str, cancel) -> tuple[float, int]:
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.pipeline.submission import submit_folder
    from cvunet_matting.storage.redis_client import get_redis

    batch_id = submit_folder(make_folder(count, name), OutputOptions())
    support.wait_until(lambda: batch_row(batch_id)["state"] != "listing", 600, interval=0.2, message="listing")
    support.wait_until(lambda: any(r["state"] == "success" for r in rows_of(batch_id)), 600, interval=0.2)
    started = time.monotonic()
    cancel(get_redis(), batch_id)
    support.wait_until(lambda: batch_row(batch_id)["state"] == "done", 3600, interval=0.2, message="the end")
    took = time.monotonic() - started
    reached = sum(1 for r in rows_of(batch_id) if r["error_code"] == "cancelled" and r["attempts"])
    return took, reached


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    harness.setup()
    from cvunet_matting.pipeline import cancelling

    worker, books = start_workers("cancel0")
    try:
        before = run(args.images, "before", cancel_as_before)
        now = run(args.images, "now", lambda client, batch_id: cancelling.cancel(client, batch_id=batch_id))
    finally:
        support.kill_group(worker)
        support.kill_group(books)
    print(f"{args.images}-image folder batch, one CPU worker, cancelled after its first image:")
    print("| cancel | to the batch's end, s | cancelled images a worker reached |")
    print("|---|---|---|")
    for label, (took, reached) in (("before (every message reaches a worker)", before), ("now", now)):
        print(f"| {label} | {took:.1f} | {reached:,} |")
    print(f"ratio before / now: {before[0] / now[0]:.1f}")


if __name__ == "__main__":
    main()
