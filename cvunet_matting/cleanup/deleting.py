"""Deleting finished work at its owner's request: its files (the original, the cut-out, its alpha
matte, a batch's ZIP and manifest) go now, not when retention would take them, and it leaves its
owner's history, the pages and the API (404 from then on).

The rows stay in PostgreSQL, marked deleted (and expired, so every reader that knows retention offers
no file and no new task reuses the result), as the durable record of what ran, without what names or
describes the photo (its file name, options and error text at once, its paths and input hash once the
files are gone: db/writes.py, migration 008). An input shared with
another kept task (the same bytes sent twice) stays for it. Only finished work is deleted: a task
still waiting is cancelled first, and an image of a batch goes with its batch, whose ZIP holds it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cvunet_matting import db
from cvunet_matting.db import reads, writes
from cvunet_matting.db.rows import BatchRow
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.states import FINAL_TASK_STATES, BatchState
from cvunet_matting.storage.files import Storage

from . import purging

SETTLE_S = 600  # a deletion this recent may still be removing its files in its web process
UNFINISHED = "it has not finished: cancel it (or wait for it to end), then delete it"


def delete_task(storage: Storage, task_id) -> dict:
    """Delete one finished task outside any batch; returns how many files were removed."""
    with db.transaction() as cur:
        row = reads.lock_task(cur, task_id)  # a retry of the same task waits, then finds it expired
        if row is None or row["deleted_at"]:
            raise InputError(f"no task {task_id}", code=ErrorCode.NOT_FOUND)
        if row["batch_id"]:
            raise InputError(
                f"task {task_id} belongs to batch {row['batch_id']}, whose ZIP holds it: delete the batch",
                code=ErrorCode.IN_BATCH,
            )
        if row["state"] not in FINAL_TASK_STATES:
            raise InputError(f"task {task_id} is {row['state']}: {UNFINISHED}", code=ErrorCode.NOT_FINISHED)
        writes.delete_tasks(cur, [row["id"]])
        unused = reads.inputs_no_longer_used(cur, purging.input_keys([row]))
    return {"task_id": str(row["id"]), "deleted": 1, "files_removed": _remove(storage, [row], unused)}


def delete_batch(storage: Storage, batch_id) -> dict:
    """Delete a finished batch with every image in it; returns how many tasks and files went."""
    with db.transaction() as cur:
        tasks = reads.lock_batch_tasks(cur, batch_id)  # tasks first, then the batch: as a retry locks them
        batch = reads.lock_batch(cur, batch_id)
        if batch is None or batch["deleted_at"]:
            raise InputError(f"no batch {batch_id}", code=ErrorCode.NOT_FOUND)
        running = sum(t["state"] not in FINAL_TASK_STATES for t in tasks)
        if batch["state"] != BatchState.DONE or running:
            raise InputError(
                f"batch {batch_id} has {running} image(s) not finished: {UNFINISHED}", code=ErrorCode.NOT_FINISHED
            )
        writes.delete_tasks(cur, [t["id"] for t in tasks])
        writes.delete_batch(cur, batch["id"])
        unused = reads.inputs_no_longer_used(cur, purging.input_keys(tasks))
    removed = _remove(storage, tasks, unused, batch)
    return {"batch_id": str(batch["id"]), "deleted": len(tasks), "files_removed": removed}


def delete_all_of(storage: Storage, owner_id) -> dict:
    """Delete every finished batch and image of one owner (an operator's erasure request): counts of
    what went, and of the images left because they have not finished yet."""
    with db.transaction() as cur:
        batch_ids, task_ids = reads.owned_undeleted(cur, owner_id)
    totals = {"batches": 0, "images": 0, "files": 0, "unfinished": 0}
    for kind, ids, delete in (("batches", batch_ids, delete_batch), ("images", task_ids, delete_task)):
        for one in ids:
            try:
                done = delete(storage, one)
            except InputError as exc:
                if exc.code == ErrorCode.NOT_FOUND:  # its owner deleted it meanwhile
                    continue
                if exc.code != ErrorCode.NOT_FINISHED:
                    raise
                totals["unfinished"] += _unfinished_images(one) if kind == "batches" else 1
                continue
            totals[kind] += 1
            totals["images"] += done["deleted"] if kind == "batches" else 0
            totals["files"] += done["files_removed"]
    # Their earlier deletions whose files a dead web process left: now, not at the next sweep (the
    # rows keep the paths, which carry the photos' names, until their files are gone).
    totals["files"] += purge_leftovers(storage, settle_s=0, owner_id=owner_id)["files"]
    return totals


def _unfinished_images(batch_id) -> int:
    with db.transaction() as cur:
        return reads.batch_counts(cur, batch_id)["pending"]


def _remove(
    storage: Storage, tasks: Sequence[Mapping[str, Any]], unused_inputs: set[str], batch: BatchRow | None = None
) -> int:
    """Files go once the rows say deleted (committed), then the rows say so: a web process killed in
    between leaves them unpurged, and purge_leftovers removes them later."""
    removed = purging.remove_task_files(storage, tasks) + purging.remove_inputs(storage, unused_inputs)
    if batch is not None:
        removed += purging.remove_batch_files(storage, batch)
    with db.transaction() as cur:
        writes.mark_purged(cur, [t["id"] for t in tasks], batch["id"] if batch else None)
    return removed


def purge_leftovers(storage: Storage, settle_s: float = SETTLE_S, page: int = 1000, owner_id=None) -> dict:
    """Remove the files of deletions whose web process died before it could (the workers' watchdog runs
    this with retention, hourly; `user purge` for its user): how many tasks and batches were purged,
    and files removed."""
    totals = {"tasks": 0, "batches": 0, "files": 0}
    while True:
        with db.transaction() as cur:
            tasks = reads.unpurged_tasks(cur, settle_s, page, owner_id)
            unused = reads.inputs_no_longer_used(cur, purging.input_keys(tasks))
        if not tasks:
            break
        totals["tasks"] += len(tasks)
        totals["files"] += _remove(storage, tasks, unused)
    with db.transaction() as cur:
        batches = reads.unpurged_batches(cur, settle_s, owner_id)
    for batch in batches:
        totals["batches"] += 1
        totals["files"] += _remove(storage, [], set(), batch)
    return totals
