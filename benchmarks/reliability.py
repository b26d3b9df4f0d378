"""`make reliability`: scripted faults and a load run on 127.0.0.1, then a table of what happened.

Every scenario ends with an audit: each input must have exactly one Postgres row and, when it
succeeded, exactly one output file. Not part of the fast test suite (it takes minutes).
Usage: python benchmarks/reliability.py [--only NAME ...] [--load-images 2000 --load-clients 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import harness

from tests.support import PrivateRedis  # noqa: E402 (harness first: it sets the environment)

REDIS = PrivateRedis().start()  # a private server: the Redis scenario really restarts it
os.environ["CVUNET_REDIS_URL"] = REDIS.url
# Short limits, so a killed worker's task returns within a minute (the visibility timeout is
# never below twice the hard limit), yet far above an ISNet image on a slow, busy CPU (5 to 10 s).
os.environ["CVUNET_TASK_HARD_LIMIT"] = "30"
os.environ["CVUNET_VISIBILITY_TIMEOUT"] = "60"

from tests import support  # noqa: E402
from tests.support import rows_of  # noqa: E402

ISNET = {"CVUNET_MODEL": "isnet-fp16"}


@dataclass
class Row:
    scenario: str
    inputs: int
    completed: int
    failed_expected: int
    lost: int
    duplicated: int
    note: str = ""


def photos(count: int, seed: int) -> list:
    from cvunet_matting.submission import Item

    return [Item(f"{seed}-{i}.jpg", data) for i, data in enumerate(harness.photos(count + seed)[seed:])]


def wait_batch(batch_id: str, timeout: float = 600, tick=None) -> None:
    from cvunet_matting import db
    from cvunet_matting.db import reads

    def done() -> bool:
        if tick:
            tick()
        with db.transaction() as cur:
            return reads.get_batch(cur, batch_id)["state"] == "done"

    support.wait_until(done, timeout, interval=0.5, message=f"batch {batch_id} not done")


def audit(name: str, batch_id: str, inputs: int, expect_failure=lambda row: False, note: str = "") -> Row:
    from cvunet_matting.config import get_settings

    rows = rows_of(batch_id)
    root = get_settings().data_dir
    out_dir = root / os.path.dirname(rows[0]["output_path"])
    files = [p for p in out_dir.iterdir() if p.suffix in {".png", ".jpg", ".webp"}] if out_dir.exists() else []
    completed = sum(r["state"] == "success" and (root / r["output_path"]).exists() for r in rows)
    expected = sum(r["state"] == "failure" and expect_failure(r) for r in rows)
    partial = list(out_dir.glob(".*.part")) if out_dir.exists() else []
    # A second row for the same input, or an output file no successful row accounts for.
    duplicated = (len(rows) - len({r["input_key"] for r in rows})) + max(0, len(files) - completed)
    note = note + (f"; {len(partial)} partial files left" if partial else "")
    return Row(name, inputs, completed, expected, inputs - completed - expected, duplicated, note.strip("; "))


def submit(items, **overrides) -> str:
    from cvunet_matting.config import load_settings
    from cvunet_matting.encoding import OutputOptions
    from cvunet_matting.submission import submit_batch

    settings = load_settings({**os.environ, **overrides})
    return submit_batch(items, OutputOptions(), settings=settings)


def successes(batch_id: str) -> int:
    return sum(r["state"] == "success" for r in rows_of(batch_id))


def worker(name: str, **env):
    return support.start_worker(name, harness.ROOT / "logs", env)


def scenario_worker_kill() -> Row:
    first = worker("k0@%h", **ISNET)
    batch_id = submit(photos(8, 1))
    support.wait_until(lambda: successes(batch_id) >= 2, 300, message="two done")
    support.kill_group(first)
    second = worker("k1@%h", **ISNET)
    try:
        wait_batch(batch_id)
    finally:
        support.kill_group(second)
    return audit("kill -9 a worker mid-task", batch_id, 8)


def scenario_redis_restart() -> Row:
    proc = worker("r0@%h", **ISNET)
    try:
        batch_id = submit(photos(8, 20), CVUNET_BATCH_CHUNK="3")
        support.wait_until(lambda: successes(batch_id) >= 2, 300, message="two done")
        REDIS.restart()  # queue, unacked messages and chord counters are gone
        time.sleep(5)  # the worker finishes the image in hand and reconnects
        reconcile = subprocess.run(
            [sys.executable, "-m", "cvunet_matting.cli", "reconcile"], capture_output=True, text=True, timeout=120
        )
        wait_batch(batch_id)
    finally:
        support.kill_group(proc)
    return audit("restart Redis, then reconcile", batch_id, 8, note=reconcile.stdout.strip().splitlines()[-1])


def scenario_postgres_outage() -> Row:
    proxy = support.TcpProxy(5432)
    url = os.environ["CVUNET_DATABASE_URL"].replace(":5432/", f":{proxy.port}/")
    proc = worker("p0@%h", CVUNET_DATABASE_URL=url, **ISNET)
    try:
        batch_id = submit(photos(6, 40))
        support.wait_until(lambda: successes(batch_id) >= 1, 300, message="one done")
        proxy.stop()
        time.sleep(8)  # a few images finish while Postgres is unreachable
        proxy = proxy.restart()
        wait_batch(batch_id)
    finally:
        proxy.stop()
        support.kill_group(proc)
    return audit("Postgres unreachable, then back", batch_id, 6)


def scenario_poison() -> Row:
    from cvunet_matting.storage import sha256_bytes

    items = photos(5, 60)
    proc = worker("x0@%h", CVUNET_TEST_CRASH_ON=sha256_bytes(items[0].data))
    try:
        batch_id = submit(items)
        wait_batch(batch_id)
    finally:
        support.kill_group(proc)
    return audit("input that crashes the worker", batch_id, 5, lambda r: "died 3 times" in (r["error"] or ""))


def scenario_disk_full() -> Row:
    from cvunet_matting.config import get_settings

    outputs = get_settings().data_dir / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(outputs)]).returncode:
        return Row("output disk full", 0, 0, 0, 0, 0, "skipped: cannot mount a small tmpfs here")
    proc = worker("d0@%h", **ISNET)
    try:
        batch_id = submit(photos(6, 80))
        wait_batch(batch_id, timeout=900)
        row = audit("output disk full", batch_id, 6, lambda r: "No space left" in (r["error"] or ""))
    finally:
        support.kill_group(proc)
        subprocess.run(["umount", "-l", str(outputs)])
    return row


def scenario_web_kill() -> Row:
    from concurrent.futures import ThreadPoolExecutor

    from bench_http import start_stack

    from tests.support.httpclient import matte_over_http

    # The web layer is under test: a tiny model keeps every image well inside its time limit.
    os.environ["CVUNET_MODEL"] = str(support.build_tiny_model(harness.ROOT / "models" / "tiny-cvunet.onnx"))
    try:
        stack = start_stack()
    finally:
        del os.environ["CVUNET_MODEL"]
    images = harness.photos(12 + 100)[100:]
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(matte_over_http, stack.url, f"w{i}.jpg", d) for i, d in enumerate(images)]
            time.sleep(3)
            support.kill_group(stack.procs.pop("web1"))
            results = [f.result() for f in futures]
        # A request cut off with its instance gets an error; what counts is what the server holds.
        outcomes = [server_outcome(data, result) for data, result in zip(images, results, strict=True)]
    finally:
        stack.stop()
    notes = [f"{r['status']} {r.get('stage', '')}: {o}" for r, o in zip(results, outcomes, strict=True) if not r["ok"]]
    return Row(
        "kill -9 a web instance",
        len(images),
        outcomes.count("done") + outcomes.count("done, response lost"),
        outcomes.count("refused, nothing stored"),
        outcomes.count("lost"),
        0,
        "; ".join(notes),
    )


def server_outcome(data: bytes, result: dict, wait_s: float = 60) -> str:
    """'done' (the client has its result), 'done, response lost' (finished on the server: it is in
    the history), 'refused, nothing stored' (the client was told and nothing was accepted: it may
    send again) or 'lost' (accepted but never finished)."""
    from cvunet_matting import db
    from cvunet_matting.storage import sha256_bytes

    if result["ok"]:
        return "done"
    deadline = time.monotonic() + wait_s
    while True:
        with db.transaction() as cur:
            cur.execute("SELECT state FROM tasks WHERE input_key = %s", (sha256_bytes(data),))
            states = [row["state"] for row in cur.fetchall()]
        if not states:
            return "refused, nothing stored"
        if "success" in states:
            return "done, response lost"
        if time.monotonic() > deadline or all(s == "failure" for s in states):
            return "lost"
        time.sleep(0.5)


SCENARIOS = {
    "worker": scenario_worker_kill,
    "web": scenario_web_kill,
    "redis": scenario_redis_restart,
    "postgres": scenario_postgres_outage,
    "disk": scenario_disk_full,
    "poison": scenario_poison,
}


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'scenario':<34} {'inputs':>6} {'completed':>9} {'failed-as-expected':>18} {'lost':>5} {'duplicated':>10}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(
            f"{r.scenario:<34} {r.inputs:>6} {r.completed:>9} {r.failed_expected:>18} {r.lost:>5} {r.duplicated:>10}"
            + (f"  {r.note}" if r.note else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", choices=[*SCENARIOS, "load"])
    parser.add_argument("--load-images", type=int, default=2000)
    parser.add_argument("--load-clients", type=int, default=200)
    args = parser.parse_args()
    harness.setup()
    rows = []
    try:
        for name, scenario in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            print(f"running {name} ...", flush=True)
            try:
                rows.append(scenario())
            except Exception as exc:  # one broken scenario must not hide the others' figures
                rows.append(Row(name, 0, 0, 0, 0, 0, f"scenario error: {exc!r}"[:300]))
            print_table(rows[-1:])
        if not args.only or "load" in args.only:
            from loadtest import run_load

            rows.append(run_load(args.load_images, args.load_clients))
    finally:
        REDIS.stop()
    print_table(rows)


if __name__ == "__main__":
    main()
