"""Operator verbs over PostgreSQL's record: requeue failed or stuck tasks, reconcile what Redis lost."""

from __future__ import annotations

import json
import time
from collections import defaultdict

from celery import chord, group

from . import batches, db, jobs, queries
from .celery_app import app
from .config import get_settings
from .redis_client import get_redis, reset_attempts


def by_name(task: str, *args):
    """A signature by task name: operator commands need not import the worker side."""
    return app.signature(f"cvunet_matting.{task}", args=args, immutable=True)


def republish(rows: list[dict], callback_for_batch) -> None:
    """Publish rows again under their own task ids; batch members as one chord per (batch, chunk)."""
    groups = defaultdict(list)
    for row in rows:
        groups[(str(row["batch_id"]) if row["batch_id"] else None, row["chunk"])].append(row)
    for (batch_id, chunk), members in groups.items():
        signatures = [batches._signature(r) for r in members]
        if batch_id is None:
            for sig in signatures:
                sig.apply_async()
        else:
            chord(group(signatures), callback_for_batch(batch_id, chunk)).apply_async()


def requeue(failed: bool, stuck_seconds: int | None, batch_id=None, dry_run: bool = False) -> list[dict]:
    """Send failed and/or stuck tasks back to the queue; each batch touched is finalized again."""
    with db.transaction() as cur:
        rows = queries.requeue_candidates(cur, failed, stuck_seconds, batch_id)
        if dry_run or not rows:
            return rows
        jobs.reset_for_requeue(cur, [r["id"] for r in rows])
        jobs.reopen_batches(cur, {r["batch_id"] for r in rows if r["batch_id"]})
    reset_attempts([str(r["id"]) for r in rows])
    republish(rows, lambda batch, _chunk: by_name("finalize_batch", batch))
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
    """Wait while workers still run tasks that Redis forgot, then return the ids worker hold.

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
        unfinished = queries.unfinished(cur)
        orphans = queries.orphan_chunks(cur)
        unfinalized = queries.unfinalized_batches(cur)
        undispatched = queries.undispatched_batches(cur)
    present = held_by_redis() | (held_by_workers() if dry_run else in_workers)
    lost = [r for r in unfinished if str(r["id"]) not in present]
    if not dry_run:
        republish(lost, lambda batch, chunk: by_name("chunk_done", batch, chunk))
        for chunk in orphans:
            by_name("chunk_done", str(chunk["batch_id"]), chunk["idx"]).apply_async()
        for batch in unfinalized:
            by_name("finalize_batch", str(batch["id"])).apply_async()
        for batch in undispatched:
            batches.dispatch_next(str(batch["id"]))
    stalled = {str(c["batch_id"]) for c in orphans} | {str(b["id"]) for b in unfinalized + undispatched}
    return {"lost": lost, "stalled_batches": sorted(stalled)}
