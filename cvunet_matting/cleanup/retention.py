"""Retention: inputs, results (with the alpha mattes derived from them) and archives older than
CVUNET_RETENTION_DAYS are removed from disk.

A task expires once it finished longer ago than the retention; a batch once it did and none of its
tasks is still kept. An input file is shared by every task with the same bytes, so it goes only when
no kept task reads it. The rows stay as history, marked expired and without what names or describes
the photo (file name, options, error text, paths, input hash: db/writes.py); the results table
forgets them so no new task copies a result that is gone. Runs hourly in the workers' elected watchdog (one at a
time, and no extra process to deploy) and on demand as `celery -A cvunet_matting expire`.

Each sweep also measures what the service's files take (inputs and outputs, archives included) and
keeps it in Redis for the web's /metrics: walking every file on each scrape would be too slow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

import redis

from cvunet_matting import db
from cvunet_matting.config import Settings
from cvunet_matting.db import reads, writes
from cvunet_matting.storage.files import Storage, StorageAway
from cvunet_matting.storage.redis_client import get_redis

from . import purging

log = logging.getLogger(__name__)
PAGE = 1000  # rows expired per transaction, so a year of history does not make one huge one
DATA_BYTES = "cvunet:data-bytes"  # a hash: bytes, at (the Unix time of the measurement)
_measuring = threading.Lock()


def expire(settings: Settings, dry_run: bool = False) -> dict:
    """Expire everything past retention; returns counts (what would be done, with dry_run).
    Then measures the data (even with retention off), in the background: see measure_soon."""
    if settings.retention_days <= 0:
        totals = {"tasks": 0, "batches": 0, "inputs": 0, "files": 0}
    else:
        totals = _expire(settings, dry_run)
    if not dry_run:
        measure_soon(settings)
    return totals


def _expire(settings: Settings, dry_run: bool) -> dict:
    storage = Storage(settings.data_dir)
    totals = {"tasks": 0, "batches": 0, "inputs": 0, "files": 0}
    if not dry_run and not storage.writable():
        # Rows are marked (and erased) before their files go: on a read-only root the files would
        # stay with nothing left to find them by. The next round tries again.
        raise StorageAway("the data root cannot be written: retention waits for it")
    while True:
        with db.transaction() as cur:
            tasks = reads.tasks_past_retention(cur, settings.retention_days, PAGE)
            if not tasks or dry_run:
                totals["tasks"] += len(tasks)
                break
            writes.expire_tasks(cur, [t["id"] for t in tasks])
            # A file refused on arrival has no input ('' for a key): nothing to look for, nothing to remove.
            unused = reads.inputs_no_longer_used(cur, purging.input_keys(tasks))
        totals["tasks"] += len(tasks)
        totals["files"] += purging.remove_task_files(storage, tasks)
        totals["inputs"] += purging.remove_inputs(storage, unused)
    with db.transaction() as cur:
        batches = reads.batches_past_retention(cur, settings.retention_days)
        if batches and not dry_run:
            writes.expire_batches(cur, [b["id"] for b in batches])
    totals["batches"] = len(batches)
    if not dry_run:
        totals["files"] += sum(purging.remove_batch_files(storage, b) for b in batches)
    return totals


def measure_soon(settings: Settings) -> None:
    """Measure in a thread of its own: the watchdog's heartbeat shares the caller's thread, and a walk
    of a large (or network) data root could outlast the heartbeat's TTL. Skipped while one still runs."""
    if not _measuring.acquire(blocking=False):
        return

    def run():
        try:
            measure(settings)
        except (OSError, redis.RedisError) as exc:
            log.warning("retention: the data root could not be measured: %s", exc)
        finally:
            _measuring.release()

    threading.Thread(target=run, name="cvunet-measure-data", daemon=True).start()


def measure(settings: Settings) -> int:
    """Bytes of the service's files (inputs and outputs), recorded in Redis with the time it was taken."""
    storage = Storage(settings.data_dir)
    total = sum(_tree_bytes(folder) for folder in (storage.inputs, storage.outputs))
    get_redis().hset(DATA_BYTES, mapping={"bytes": total, "at": time.time()})
    return total


def data_bytes(client: redis.Redis) -> tuple[int, float] | None:
    """The last measurement (bytes, Unix time), or None if no sweep has measured yet."""
    size, at = client.hmget(DATA_BYTES, "bytes", "at")
    return (int(size), float(at)) if size is not None and at is not None else None


def _tree_bytes(folder: Path) -> int:
    """Sizes of the regular files under `folder` (links not followed); files removed meanwhile skipped."""
    total, todo = 0, [str(folder)]
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    with contextlib.suppress(FileNotFoundError):
                        if entry.is_dir(follow_symlinks=False):
                            todo.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:  # a batch folder removed while we walked, or no outputs yet
            continue
    return total
