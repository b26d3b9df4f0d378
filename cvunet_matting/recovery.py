"""Putting work back on the queue from PostgreSQL's record: retry one task, requeue failed or stuck
ones, reconcile what Redis lost. The operator's commands and the web's Retry button both end here."""

from __future__ import annotations

import json
import time

from . import batch_lifecycle, db, dispatch
from .celery_app import app
from .config import get_settings
from .db import reads, writes
from .redis_client import get_redis, reset_attempts


def _requeue_rows(cur, rows: list[dict]) -> None:
    """Rows back to pending and their batches reopened (the ZIP and manifest are rebuilt)."""
    writes.reset_for_requeue(cur, [r["id"] for r in rows])
    writes.reopen_batches(cur, {r["batch_id"] for r in rows if r["batch_id"]})


def _publish_again(rows: list[dict]) -> None:
    reset_attempts([str(r["id"]) for r in rows])
    dispatch.republish(rows, dispatch.finalize_batch)


def retry_task(task_id) -> str:
    """Requeue a failed task under its own id: 'requeued', 'not_found' or 'not_failed'."""
    with db.transaction() as cur:
        row = reads.lock_task(cur, task_id)  # two clicks at once requeue it once
        if row is None:
            return "not_found"
        if row["state"] != "failure":
            return "not_failed"
        _requeue_rows(cur, [row])
    _publish_again([row])
    return "requeued"


def requeue(failed: bool, stuck_seconds: int | None, batch_id=None, dry_run: bool = False) -> list[dict]:
    """Send failed and/or stuck tasks back to the queue; each batch touched is finalized again."""
    with db.transaction() as cur:
        rows = reads.requeue_candidates(cur, failed, stuck_seconds, batch_id)
        if dry_run or not rows:
            return rows
        _requeue_rows(cur, rows)
    _publish_again(rows)
    return rows


def held_by_redis() -> set[str]:
    """Task ids Redis holds: queued, or delivered and not yet acknowledged."""
    settings = get_settings()
    client = get_redis()
    ids = {json.loads(raw)["headers"]["id"] for raw in client.lrange(settings.queue, 0, -1)}
    ids |= {json.loads(raw)[0]["headers"]["id"] for raw in client.hvals("unacked")}
    return ids


def held_by_workers() -> set[str]:
    """Task ids live workers report as running, reserved or scheduled."""
    ids = set()
    inspector = app.control.inspect(timeout=2.0)
    for reply in (inspector.active(), inspector.reserved(), inspector.scheduled()):
        for tasks in (reply or {}).values():
            for task in tasks:
                ids.add(task.get("id") or task.get("request", {}).get("id"))
    return ids


def wait_for_orphaned_runs(wait_s: float, notify=print) -> set[str]:
    """Wait while workers still run tasks that Redis forgot, then return the ids workers hold.

    A task in a worker's hands is normally also in Redis's `unacked` hash. One that is not was
    delivered before Redis lost its data, so its chord counter is gone too: only once it finishes
    can its chunk be found complete and restarted. Reconciling before that would strand the batch.
    """
    deadline = time.monotonic() + wait_s
    while True:
        workers = held_by_workers()
        orphaned = workers - held_by_redis()
        if not orphaned or time.monotonic() >= deadline:
            return workers
        notify(f"waiting for {len(orphaned)} task(s) that workers still run but Redis forgot ...")
        time.sleep(2)


def reconcile(dry_run: bool = False, wait_s: float = 0, notify=print) -> dict:
    """Re-enqueue what PostgreSQL expects but Redis lost, and restart batches whose chain broke."""
    in_workers = set() if dry_run else wait_for_orphaned_runs(wait_s, notify)
    with db.transaction() as cur:
        unfinished = reads.unfinished(cur)
        orphans = reads.orphan_chunks(cur)
        unfinalized = reads.unfinalized_batches(cur)
        undispatched = reads.undispatched_batches(cur)
    present = held_by_redis() | (held_by_workers() if dry_run else in_workers)
    lost = [r for r in unfinished if str(r["id"]) not in present]
    if not dry_run:
        dispatch.republish(lost, dispatch.chunk_done)
        for chunk in orphans:
            dispatch.chunk_done(str(chunk["batch_id"]), chunk["idx"]).apply_async()
        for batch in unfinalized:
            dispatch.finalize_batch(str(batch["id"])).apply_async()
        for batch in undispatched:
            batch_lifecycle.dispatch_next(str(batch["id"]))
    stalled = {str(c["batch_id"]) for c in orphans} | {str(b["id"]) for b in unfinalized + undispatched}
    return {"lost": lost, "stalled_batches": sorted(stalled)}
