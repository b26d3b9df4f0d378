"""Retention: inputs, results and archives older than CVUNET_RETENTION_DAYS are removed from disk.

A task expires once it finished longer ago than the retention; a batch once it did and none of its
tasks is still kept. An input file is shared by every task with the same bytes, so it goes only when
no kept task reads it. The rows stay as history, marked expired; the results table forgets them so
no new task copies a result that is gone. Runs hourly in the workers' elected watchdog (one at a
time, and no extra process to deploy) and on demand as `celery -A cvunet_matting expire`.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from . import db
from .config import Settings
from .db import reads, writes
from .storage import Storage

log = logging.getLogger(__name__)
PAGE = 1000  # rows expired per transaction, so a year of history does not make one huge one


def expire(settings: Settings, dry_run: bool = False) -> dict:
    """Expire everything past retention; returns counts (what would be done, with dry_run)."""
    if settings.retention_days <= 0:
        return {"tasks": 0, "batches": 0, "inputs": 0, "files": 0}
    storage = Storage(settings.data_dir)
    totals = {"tasks": 0, "batches": 0, "inputs": 0, "files": 0}
    while True:
        with db.transaction() as cur:
            tasks = reads.tasks_past_retention(cur, settings.retention_days, PAGE)
            if not tasks or dry_run:
                totals["tasks"] += len(tasks)
                break
            writes.expire_tasks(cur, [t["id"] for t in tasks])
            unused = reads.inputs_no_longer_used(cur, {t["input_key"] for t in tasks})
        totals["tasks"] += len(tasks)
        totals["files"] += _remove(storage.root / t["output_path"] for t in tasks)
        totals["inputs"] += _remove(storage.input_path(key) for key in unused)
    with db.transaction() as cur:
        batches = reads.batches_past_retention(cur, settings.retention_days)
        if batches and not dry_run:
            writes.expire_batches(cur, [b["id"] for b in batches])
    totals["batches"] = len(batches)
    if not dry_run:
        totals["files"] += sum(_remove_batch_files(storage, b) for b in batches)
    return totals


def _remove(paths) -> int:
    removed = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def _remove_batch_files(storage: Storage, batch: dict) -> int:
    """The ZIP and manifest, then the batch folder if nothing else is left in it."""
    removed = _remove(storage.root / p for p in (batch["zip_path"], batch["manifest_path"]) if p)
    folder = Path(storage.root / batch["output_dir"])
    with contextlib.suppress(OSError):  # not empty (a file someone put there): left alone
        folder.rmdir()
    return removed
