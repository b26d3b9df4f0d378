"""`make bench-web-stop`: how long a web instance takes to stop (SIGTERM) while a client waits on it.

A status request held with ?wait=30 on web1 directly (a task nobody runs: the stack's worker is frozen
meanwhile, so neither it nor its watchdog's reconcile moves the task), then SIGTERM to web1's gunicorn.
Prints, per round, what the client got and when, and when the instance had exited; web1's graceful
timeout is the stack's (20 s). Usage: python benchmarks/bench_web_stop.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import threading
import time
import uuid

import harness
from bench_http import start_stack

from tests.support.httpclient import request


def pending_task(owner_id) -> str:
    from cvunet_matting import db
    from cvunet_matting.db import writes

    row = {"id": uuid.uuid4(), "filename": "held.png", "input_key": "none", "options": {}, "output_path": "/none"}
    with db.transaction() as cur:
        writes.create_tasks(cur, [row])
        writes.set_owner(cur, owner_id, task_ids=(row["id"],))
    return str(row["id"])


def one_round(stack, user) -> tuple[str, float, float]:
    """What the held client got, seconds from SIGTERM to its answer, and to the instance's exit."""
    url = f"http://127.0.0.1:{stack.ports.web[0]}/api/v1/tasks/{pending_task(user.id)}?wait=30"
    got = {}

    def ask():
        try:
            got["answer"] = str(request("GET", url, headers=user.bearer)[0])
        except Exception as exc:  # the connection cut without an answer: what this measures
            got["answer"] = type(exc).__name__
        got["at"] = time.monotonic()

    client = threading.Thread(target=ask)
    client.start()
    time.sleep(1.0)  # the request is held by now
    sent = time.monotonic()
    stack.procs["web1"].send_signal(signal.SIGTERM)
    stack.procs["web1"].wait(timeout=120)
    exited = time.monotonic()
    client.join()
    return got["answer"], got["at"] - sent, exited - sent


def wait_for_web1(stack) -> None:
    port = stack.ports.web[0]
    up = lambda: harness.support.port_open(port) and request("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200  # noqa: E731
    harness.support.wait_until(up, 60, message="web1 up")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    harness.setup()
    stack = start_stack()
    user = harness.support.make_user(prefix="held")
    worker_group = os.getpgid(stack.procs["worker"].pid)
    rows = []
    try:
        os.killpg(worker_group, signal.SIGSTOP)
        for _ in range(args.rounds):
            wait_for_web1(stack)
            rows.append(one_round(stack, user))
            stack.start_web(0)
    finally:
        os.killpg(worker_group, signal.SIGCONT)
        stack.stop()
    for answer, answered, exited in rows:
        print(f"held request: {answer} after {answered:.2f} s; web1 exited after {exited:.2f} s")
    print(
        f"median: answered after {statistics.median(r[1] for r in rows):.2f} s, exited after "
        f"{statistics.median(r[2] for r in rows):.2f} s"
    )


if __name__ == "__main__":
    main()
