"""`make reliability`: scripted faults and a load run on 127.0.0.1, then a table of what happened.

Every scenario ends with an audit: each input must have exactly one Postgres row and, when it
succeeded, exactly one output file; node faults also report the seconds from the fault to the image
running again. Production defaults throughout: task time limits, visibility timeout and heartbeat
TTL are not shortened. Not part of the test suite (it takes many minutes).
Usage: python benchmarks/reliability.py [--only NAME ...] [--load-images 2000 --load-clients 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import harness
import node_faults
from outcomes import Row

from tests.support import PrivateRedis  # noqa: E402 (harness first: it sets the environment)

REDIS = PrivateRedis().start()  # a private server: the Redis scenario really restarts it
os.environ["CVUNET_REDIS_URL"] = REDIS.url

from tests import support  # noqa: E402
from tests.support import rows_of  # noqa: E402

ISNET = {"CVUNET_MODEL": "isnet-fp16"}


def photos(count: int, seed: int) -> list:
    from cvunet_matting.pipeline.submission import Item

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
    unexpected = [r for r in rows if r["state"] == "failure" and not expect_failure(r)]
    if unexpected:  # say why, so a lost row can be read without the (removed) database
        note += f"; {len(unexpected)} failed: {unexpected[0]['error_code']}: {unexpected[0]['error']}"[:200]
    return Row(name, inputs, completed, expected, inputs - completed - expected, duplicated, note.strip("; "))


def submit(items, **overrides) -> str:
    from cvunet_matting.config import load_settings
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.pipeline.submission import submit_batch

    settings = load_settings({**os.environ, **overrides})
    return submit_batch(items, OutputOptions(), settings=settings)


def successes(batch_id: str) -> int:
    return sum(r["state"] == "success" for r in rows_of(batch_id))


def worker(name: str, **env):
    return support.start_worker(name, harness.ROOT / "logs", env)


def node_fault(title: str, run, inputs: int, note: str = "") -> Row:
    """A scenario from node_faults: it returns the batch and the recovery time; the audit follows."""
    batch_id, recovery = run(lambda count, seed, **env: submit(photos(count, seed), **env), wait_batch)
    row = audit(title, batch_id, inputs, note=note)
    row.recovery_s = recovery
    return row


def scenario_node_killed() -> Row:
    return node_fault("node killed (whole worker tree)", node_faults.node_killed, 3)


def scenario_main_killed() -> Row:
    return node_fault("worker MainProcess killed, restarted", node_faults.main_process_killed, 3)


def scenario_frozen() -> Row:
    return node_fault("worker frozen 30 s (SIGSTOP)", node_faults.worker_frozen, 3, "its late result dropped")


def scenario_partition() -> Row:
    return node_fault("worker cut off from Redis 60 s", node_faults.partitioned, 3, "its late result dropped")


def scenario_redis_restart() -> Row:
    run = lambda submit_n, wait: node_faults.redis_restarted(REDIS, submit_n, wait)  # noqa: E731
    return node_fault("Redis restarted without its data", run, 8, "no operator: the watchdog reconciled")


def scenario_storage() -> Row:
    try:  # audited while the results are still on the tmpfs
        return node_fault("output storage read-only for 60 s", node_faults.storage_unwritable, 6, "time from writable")
    finally:
        node_faults.unmount_outputs()


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
    from cvunet_matting.storage.files import sha256_bytes

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
            futures = [
                pool.submit(matte_over_http, stack.url, f"w{i}.jpg", d, auth=stack.auth) for i, d in enumerate(images)
            ]
            time.sleep(3)
            support.kill_group(stack.procs.pop("web1"))
            routed_away = routing_stops(stack.url, time.time())
            results = [f.result() for f in futures]
        # A request cut off with its instance gets an error; what counts is what the server holds.
        outcomes = [server_outcome(data, result) for data, result in zip(images, results, strict=True)]
    finally:
        stack.stop()
    notes = [f"{r['status']} {r.get('stage', '')}: {o}" for r, o in zip(results, outcomes, strict=True) if not r["ok"]]
    notes.insert(
        0,
        f"last request failed {routed_away:.1f} s after the kill"
        if routed_away
        else "no request failed after the kill (refused connections retried on web2; health check every 1 s)",
    )
    return Row(
        "kill -9 a web instance",
        len(images),
        outcomes.count("done") + outcomes.count("done, response lost"),
        outcomes.count("refused, nothing stored"),
        outcomes.count("lost"),
        0,
        "; ".join(notes),
    )


def routing_stops(url: str, killed_at: float, watch_s: float = 15) -> float:
    """Seconds after the kill of the last request Traefik still sent to the dead instance (a 502/504).

    A POST, which Traefik does not retry on the other instance (a GET would hide the dead one), and
    one that is refused at once, storing nothing."""
    from tests.support.httpclient import fetch

    last_bad = killed_at
    while time.time() < killed_at + watch_s:
        try:
            status = fetch("POST", f"{url}/api/v1/images", b"", timeout=5)[0]
        except OSError:
            status = 599
        if status >= 500:
            last_bad = time.time()
        time.sleep(0.05)
    return last_bad - killed_at


def server_outcome(data: bytes, result: dict, wait_s: float = 60) -> str:
    """'done' (the client has its result), 'done, response lost' (finished on the server: it is in
    the history), 'refused, nothing stored' (the client was told and nothing was accepted: it may
    send again) or 'lost' (accepted but never finished)."""
    from cvunet_matting import db
    from cvunet_matting.storage.files import sha256_bytes

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
    "node": scenario_node_killed,
    "main": scenario_main_killed,
    "frozen": scenario_frozen,
    "partition": scenario_partition,
    "web": scenario_web_kill,
    "redis": scenario_redis_restart,
    "storage": scenario_storage,
    "postgres": scenario_postgres_outage,
    "disk": scenario_disk_full,
    "poison": scenario_poison,
}


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'scenario':<38} {'inputs':>6} {'completed':>9} {'failed-as-expected':>18} {'lost':>5} {'duplicated':>10}"
        f" {'recovery':>9}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        recovery = f"{r.recovery_s:.1f} s" if r.recovery_s is not None else "-"
        print(
            f"{r.scenario:<38} {r.inputs:>6} {r.completed:>9} {r.failed_expected:>18} {r.lost:>5} {r.duplicated:>10}"
            f" {recovery:>9}" + (f"  {r.note}" if r.note else "")
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
