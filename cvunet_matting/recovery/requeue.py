"""Putting work back on the queue from PostgreSQL's record: retry one task, requeue failed or stuck
ones, reconcile what Redis lost. The operator's commands, the web's Retry button and the workers'
watchdog (every few seconds) all end here."""

from __future__ import annotations

import time

from cvunet_matting import db
from cvunet_matting.accounts import quotas
from cvunet_matting.celery_app import app
from cvunet_matting.config import get_settings
from cvunet_matting.db import reads, writes
from cvunet_matting.db.rows import BatchRow, TaskRow
from cvunet_matting.pipeline import batch_lifecycle, cancelling, dispatch, finish
from cvunet_matting.states import TaskState
from cvunet_matting.storage.files import Storage
from cvunet_matting.storage.redis_client import get_redis, reset_attempts

from . import liveness, transport

# A task failed for storage is requeued automatically at most this many times.
STORAGE_REQUEUES = 3
RECHECK_S = 1.0  # between the two looks that must both find a task missing before it is republished


def _requeue_rows(cur, rows: list[TaskRow]) -> None:
    """Rows back to pending and their batches reopened (the ZIP and manifest are rebuilt)."""
    writes.reset_for_requeue(cur, [r["id"] for r in rows])
    writes.reopen_batches(cur, {r["batch_id"] for r in rows if r["batch_id"]})


def _publish_again(rows: list[TaskRow]) -> None:
    """Publish rows under their own ids as new work: their attempts, claims and old results forgotten,
    and any message still around for them (a stuck task's) removed so it cannot run later."""
    ids = [str(r["id"]) for r in rows]
    reset_attempts(ids)
    finish.forget(get_redis(), app, ids)
    transport.discard(get_redis(), get_settings().queue, set(ids))
    dispatch.republish(rows, dispatch.finalize_batch)


def retry_task(task_id, counted: bool = False) -> str:
    """Requeue a failed task under its own id: 'requeued', 'not_found', 'not_failed' or 'expired'.
    `counted` (a user's or admin's retry, not the operator's requeue): it takes a place among its
    owner's images in flight and counts toward their day (quotas.OverQuota when over a quota)."""
    with db.transaction() as cur:
        row = reads.lock_task(cur, task_id)  # two clicks at once requeue it once
        if row is None:
            return "not_found"
        if row["state"] != TaskState.FAILURE:
            return "not_failed"
        if row["expired_at"]:  # expired or deleted while the caller looked: its input may be gone
            return "expired"
        if counted:
            quotas.reserve_retry(cur, row["id"], row["owner_id"])
        _requeue_rows(cur, [row])
    cancelling.clear(get_redis(), [str(row["id"])])  # asked to run again: it runs
    _publish_again([row])
    return "requeued"


def requeue(
    failed: bool, stuck_seconds: int | None, batch_id=None, dry_run: bool = False, include_refused: bool = False
) -> list[TaskRow]:
    """Send failed and/or stuck tasks back to the queue; each batch touched is finalized again."""
    with db.transaction() as cur:
        rows = reads.requeue_candidates(cur, failed, stuck_seconds, batch_id, include_refused)
        if dry_run or not rows:
            return rows
        _requeue_rows(cur, rows)
    _publish_again(rows)
    return rows


def held_by_redis() -> set[str]:
    """Task ids Redis holds: queued (on either queue), or delivered and not yet acknowledged."""
    settings = get_settings()
    return transport.held_ids(get_redis(), settings.queue) | transport.queued_ids(
        get_redis(), settings.bookkeeping_queue
    )


def held_by_workers() -> set[str]:
    """Task ids live workers hold, from their heartbeats (see liveness.py)."""
    return liveness.held_by_live_workers(get_redis())


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


def requeue_storage_failures() -> list[TaskRow]:
    """Images that failed because storage was away go back on the queue once it can be written."""
    with db.transaction() as cur:
        rows = reads.storage_failures(cur, STORAGE_REQUEUES)
        if not rows or not Storage(get_settings().data_dir).writable():
            return []
        _requeue_rows(cur, rows)
    _publish_again(rows)
    return rows


def reconcile(dry_run: bool = False, wait_s: float = 0, settle_s: float = 2.0, notify=print) -> dict:
    """Re-enqueue what PostgreSQL expects but Redis lost, and restart batches whose chain broke.

    Rows touched in the last `settle_s` seconds are left alone: they may be on their way to Redis.
    """
    in_workers = held_by_workers() if dry_run else wait_for_orphaned_runs(wait_s, notify)
    notify("comparing PostgreSQL's unfinished tasks with what Redis and the workers hold ...")
    with db.transaction() as cur:
        unfinished = reads.unfinished_ids(cur, settle_s)
        orphans = reads.orphan_chunks(cur, settle_s)
        unfinalized = reads.unfinalized_batches(cur, batch_lifecycle.finalizer_dead_after(get_settings()))
        undispatched = reads.undispatched_batches(cur)
        listing = reads.listing_batches(cur, settle_s)
    in_redis = held_by_redis()
    lost_ids = unfinished - in_redis - in_workers
    lost = []
    if lost_ids:  # whole rows for these alone (still unfinished now: one may have ended meanwhile)
        with db.transaction() as cur:
            lost = reads.unfinished(cur, settle_s, ids=lost_ids)
    unlisted = [b for b in listing if dispatch.listing_id(str(b["id"])) not in in_redis | in_workers]
    if (lost or unlisted) and not dry_run:
        lost, unlisted = confirmed_lost(lost, unlisted, settle_s, notify)
    if in_workers - in_redis:
        orphans = []  # their chunks resume once those runs end (see wait_for_orphaned_runs)
    if not dry_run:
        _restart(lost, orphans, unfinalized, undispatched)
        for batch in unlisted:  # a listing resumes after the pages it recorded
            dispatch.publish_listing(str(batch["id"]))
    stalled = {str(c["batch_id"]) for c in orphans} | {str(b["id"]) for b in unfinalized + undispatched + unlisted}
    requeued = [] if dry_run else requeue_storage_failures()
    return {"lost": lost, "stalled_batches": sorted(stalled), "storage_requeued": requeued}


def confirmed_lost(
    lost: list[TaskRow], unlisted: list[dict], settle_s: float, notify=print
) -> tuple[list[TaskRow], list[dict]]:
    """Of what looked lost, what still does a moment later: a message a worker is taking is off the
    queue and not yet in `unacked` for a few milliseconds (kombu pops it, then records it), and a
    task may finish between the two reads. Republishing either would run the image twice, and a
    second run counts as a crash against the poison-input cap.

    A message can also stay off both for as long as a task runs: Redis hands it to a worker's BRPOP,
    and the worker leaves the reply unread while it has no free slot (see transport.reply_unread).
    Nothing in Redis shows it; that worker's beat says it is `receiving`. So the second look waits
    for a beat from every live worker made after the first look, and republishes nothing while one
    of them has such a reply: the next reconcile looks again."""
    client = get_redis()
    # Workers of the version before the beat index are looked for afresh (liveness.LegacyBeats): an
    # image one of them holds must not be republished. The second look reads them again by name.
    before = {incarnation: b["at"] for incarnation, b in liveness.beats(client, rescan=True).items()}
    time.sleep(RECHECK_S)
    beats = _await_new_beats(client, before, get_settings().heartbeat_ttl)
    held = held_by_redis() | set().union(*(set(b["held"]) for b in beats.values()))
    receiving = {incarnation for incarnation, b in beats.items() if b.get("receiving")}
    with db.transaction() as cur:
        unfinished = reads.unfinished_ids(cur, settle_s)
        listing = {str(b["id"]) for b in reads.listing_batches(cur, settle_s)}
    lost = [r for r in lost if str(r["id"]) in unfinished and str(r["id"]) not in held]
    unlisted = [b for b in unlisted if str(b["id"]) in listing and dispatch.listing_id(str(b["id"])) not in held]
    if (lost or unlisted) and receiving:
        notify(f"{len(lost) + len(unlisted)} task(s) not found, left for now: {sorted(receiving)} have a reply unread")
        return [], []
    return lost, unlisted


def _await_new_beats(client, before: dict[str, float], timeout: float) -> dict[str, dict]:
    """The live workers' beats once each worker alive at the first look has beaten again (or died),
    `timeout` at most. A beat is compared with that worker's own previous one, so the hosts' clocks
    need not agree."""
    deadline = time.monotonic() + timeout
    while True:
        beats = liveness.beats(client)
        if time.monotonic() >= deadline or all(
            beats.get(incarnation, {}).get("at") != at for incarnation, at in before.items()
        ):
            return beats
        time.sleep(0.1)


def _restart(lost: list[TaskRow], orphans: list[dict], unfinalized: list[BatchRow], undispatched: list[dict]) -> None:
    dispatch.republish(lost, dispatch.chunk_done)
    for chunk in orphans:
        dispatch.chunk_done(str(chunk["batch_id"]), chunk["idx"]).apply_async()
    for batch in unfinalized:
        dispatch.finalize_batch(str(batch["id"])).apply_async()
    for waiting in undispatched:
        batch_lifecycle.dispatch_next(str(waiting["id"]))
