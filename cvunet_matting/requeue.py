"""Operator verbs over PostgreSQL's record: requeue failed or stuck tasks, reconcile what Redis lost."""

from __future__ import annotations

import json
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


def ids_in_redis() -> set[str]:
    """Task ids Redis still holds: queued, unacknowledged, or in a live worker's hands."""
    settings = get_settings()
    client = get_redis()
    ids = set()
    for raw in client.lrange(settings.queue, 0, -1):
        ids.add(json.loads(raw)["headers"]["id"])
    for raw in client.hvals("unacked"):
        ids.add(json.loads(raw)[0]["headers"]["id"])
    inspector = app.control.inspect(timeout=2.0)
    for reply in (inspector.active(), inspector.reserved(), inspector.scheduled()):
        for tasks in (reply or {}).values():
            for task in tasks:
                ids.add(task.get("id") or task.get("request", {}).get("id"))
    return ids


def reconcile(dry_run: bool = False) -> dict:
    """Re-enqueue what PostgreSQL expects but Redis lost, and restart batches whose chord chain broke."""
    with db.transaction() as cur:
        unfinished = queries.unfinished(cur)
        orphans = queries.orphan_chunks(cur)
        unfinalized = queries.unfinalized_batches(cur)
    present = ids_in_redis()
    lost = [r for r in unfinished if str(r["id"]) not in present]
    if not dry_run:
        republish(lost, lambda batch, chunk: by_name("chunk_done", batch, chunk))
        for chunk in orphans:
            by_name("chunk_done", str(chunk["batch_id"]), chunk["idx"]).apply_async()
        for batch in unfinalized:
            by_name("finalize_batch", str(batch["id"])).apply_async()
    stalled = {str(c["batch_id"]) for c in orphans} | {str(b["id"]) for b in unfinalized}
    return {"lost": lost, "stalled_batches": sorted(stalled)}
