"""Node-level faults for `make reliability`, each timed from the fault to the image running again.

The victim works through a small batch alone; once it holds the batch's last image, a second worker
(a cluster's idle node) is started and the fault made, so the time measured is the watchdog's
detection and the restore, not the wait for a busy node to finish an image (on this loaded 2-core
host an ISNet image can take 10 s). The production defaults throughout (task limits, visibility
timeout, heartbeat TTL), nothing shortened.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import contextmanager

import harness

from tests import support
from tests.support import rows_of

ISNET = {"CVUNET_MODEL": "isnet-fp16"}
# The victim holds each image 15 s longer, so it still holds the last one once the standby is up.
SLOW = {"CVUNET_TEST_DELAY_S": "15"}


def worker(name: str, **env):
    return support.start_worker(name, harness.ROOT / "logs", {**ISNET, **env})


def in_hand(batch_id: str, worker_prefix: str, timeout: float = 600) -> dict:
    """The row of the batch's last image, once the named worker is matting it and the rest are done."""

    def held():
        rows = rows_of(batch_id)
        mine = [r for r in rows if r["state"] == "started" and (r["worker"] or "").startswith(worker_prefix)]
        rest_done = sum(r["state"] == "success" for r in rows) == len(rows) - 1
        return mine[0] if mine and rest_done else None

    return support.wait_until(held, timeout, interval=0.2, message=f"{worker_prefix} holds an image")


def reran_after(task_id, fault_at: float, not_on: str, timeout: float = 600) -> float:
    """Seconds from the fault until the image started again on another worker."""

    def restarted():
        from cvunet_matting import db
        from cvunet_matting.db import reads

        with db.transaction() as cur:
            row = reads.get_task(cur, task_id)
        started = row["started_at"]
        on_other = row["worker"] and not row["worker"].startswith(not_on)
        return on_other and started and started.timestamp() > fault_at and started.timestamp() - fault_at

    return support.wait_until(restarted, timeout, interval=0.2, message=f"task {task_id} did not run again")


@contextmanager
def victim_holding(prefix: str, submit, seed: int, **env):
    """(victim, batch_id, held row): the victim alone on a 3-image batch, holding its last image, with
    an idle standby just started; both stopped afterwards."""
    victim, standby = worker(f"{prefix}0@%h", **SLOW, **env), None
    try:
        batch_id = submit(3, seed)
        held = in_hand(batch_id, f"{prefix}0@")
        standby = worker(f"{prefix}1@%h")
        yield victim, batch_id, held
    finally:
        _stop(victim, standby)


def node_killed(submit, wait_batch) -> tuple[str, float]:
    with victim_holding("n", submit, 100) as (victim, batch_id, held):
        support.kill_group(victim)  # the whole tree, as when a host dies
        return batch_id, _finish(batch_id, held, time.time(), "n0@", wait_batch)


def main_process_killed(submit, wait_batch) -> tuple[str, float]:
    again = None
    try:
        with victim_holding("m", submit, 120) as (victim, batch_id, held):
            os.kill(victim.pid, signal.SIGKILL)  # MainProcess only; its pool child is orphaned
            fault_at = time.time()
            time.sleep(3)  # a supervisor restarts it under the same name
            again = worker("m0@%h")
            return batch_id, _finish(batch_id, held, fault_at, "m0@", wait_batch, any_worker=True)
    finally:
        _stop(again)


def worker_frozen(submit, wait_batch) -> tuple[str, float]:
    with victim_holding("f", submit, 140) as (victim, batch_id, held):
        os.killpg(victim.pid, signal.SIGSTOP)
        fault_at = time.time()
        recovery = reran_after(held["id"], fault_at, "f0@")
        time.sleep(max(0.0, 30 - (time.time() - fault_at)))  # frozen for 30 s in all
        os.killpg(victim.pid, signal.SIGCONT)  # it finishes its image late: that result must be dropped
        wait_batch(batch_id)
        time.sleep(6)
        return batch_id, recovery


def partitioned(submit, wait_batch) -> tuple[str, float]:
    proxy = support.TcpProxy(_redis_port())
    url = os.environ["CVUNET_REDIS_URL"].replace(f":{_redis_port()}/", f":{proxy.port}/")
    try:
        with victim_holding("p", submit, 160, CVUNET_REDIS_URL=url) as (_, batch_id, held):
            proxy.stop()  # cut off from Redis for 60 s
            fault_at = time.time()
            recovery = reran_after(held["id"], fault_at, "p0@")
            time.sleep(max(0.0, 60 - (time.time() - fault_at)))
            proxy = proxy.restart()
            wait_batch(batch_id)
            time.sleep(6)  # the reconnected worker's late result arrives now, and must be dropped
            return batch_id, recovery
    finally:
        proxy.stop()


def redis_restarted(redis_server, submit, wait_batch) -> tuple[str, float]:
    proc, standby = worker("r0@%h"), None
    batch_id = submit(8, 180, CVUNET_BATCH_CHUNK="3")
    try:
        support.wait_until(lambda: sum(r["state"] == "success" for r in rows_of(batch_id)) >= 2, 300, message="2 done")
        standby = worker("r1@%h")  # idle when Redis restarts: it takes the first re-enqueued image
        redis_server.restart()  # no append-only file: queue, unacked messages and chord counters gone
        fault_at = time.time()
        waiting = {str(r["id"]) for r in rows_of(batch_id) if r["state"] == "pending"}
        recovery = support.wait_until(
            lambda: _first_rerun(batch_id, waiting, fault_at), 600, interval=0.2, message="no lost image ran again"
        )
        wait_batch(batch_id)  # nobody runs reconcile: the watchdog does
        return batch_id, recovery
    finally:
        _stop(proc, standby)


def storage_unwritable(submit, wait_batch) -> tuple[str, float]:
    """Outputs on a tmpfs made read-only for a minute. The caller audits, then calls unmount_outputs()."""
    outputs = _outputs()
    outputs.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(outputs)]).returncode:
        raise RuntimeError("cannot mount a tmpfs here (needs root)")
    proc = None
    try:
        batch_id = submit(6, 200)
        subprocess.run(["mount", "-o", "remount,ro", str(outputs)], check=True)
        proc = worker("s0@%h")
        support.wait_until(lambda: any(r["state"] == "retry" for r in rows_of(batch_id)), 300, message="no retry")
        time.sleep(60)  # a minute of read-only storage
        subprocess.run(["mount", "-o", "remount,rw", str(outputs)], check=True)
        back_at = time.time()
        recovery = support.wait_until(
            lambda: _first_success_after(batch_id, back_at), 600, interval=0.2, message="nothing written after"
        )
        wait_batch(batch_id)
        return batch_id, recovery
    except BaseException:
        unmount_outputs()
        raise
    finally:
        if proc:
            support.kill_group(proc)


def unmount_outputs() -> None:
    subprocess.run(["umount", "-l", str(_outputs())])


def _outputs():
    from cvunet_matting.config import get_settings

    return get_settings().data_dir / "outputs"


def _first_rerun(batch_id: str, ids: set[str], fault_at: float):
    times = [r["started_at"].timestamp() for r in rows_of(batch_id) if str(r["id"]) in ids and r["started_at"]]
    return times and min(times) - fault_at


def _first_success_after(batch_id: str, moment: float):
    done = [r["finished_at"].timestamp() for r in rows_of(batch_id) if r["state"] == "success" and r["finished_at"]]
    later = [t for t in done if t > moment]
    return later and min(later) - moment


def _finish(batch_id: str, held: dict, fault_at: float, victim: str, wait_batch, any_worker=False) -> float:
    """Wait for the held image to start again (on any other incarnation) and for the batch to end."""
    if any_worker:
        recovery = support.wait_until(
            lambda: _restarted_anywhere(held["id"], fault_at), 600, interval=0.2, message="held image not rerun"
        )
    else:
        recovery = reran_after(held["id"], fault_at, victim)
    wait_batch(batch_id)
    return recovery


def _restarted_anywhere(task_id, fault_at: float):
    from cvunet_matting import db
    from cvunet_matting.db import reads

    with db.transaction() as cur:
        row = reads.get_task(cur, task_id)
    finished = row["state"] == "success" and row["finished_at"] and row["finished_at"].timestamp() > fault_at
    started = row["started_at"] and row["started_at"].timestamp() > fault_at
    moment = row["started_at"] if started else (row["finished_at"] if finished else None)
    return moment is not None and max(moment.timestamp() - fault_at, 0.001)


def _redis_port() -> int:
    return int(os.environ["CVUNET_REDIS_URL"].rsplit(":", 1)[1].split("/")[0])


def _stop(*procs) -> None:
    for proc in procs:
        if proc is not None:
            support.kill_group(proc)
