"""Result folders no task row names: removed in the workers' hourly round once old enough.

A lone image's result lives in `outputs/images/{task id}/`. The model's are written after their row
is committed, but a re-render on the web side (services/rerendering.py) writes its files first and
records its row, finished, after them: a web process killed in between (or a database that refused
the row while the process died before it could clean up) leaves a folder that no row names, which no
retention round or delete would ever find. Rows are never removed (deleted and expired ones stay,
scrubbed), so a folder named by a task id without a row is such litter for good.

A folder is looked at only when nothing in it changed for GRACE_S: a render writes its files and
commits its row within a second or two (make bench-rerender), so no render in progress is taken.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from cvunet_matting import db
from cvunet_matting.db import reads
from cvunet_matting.storage.files import Storage

from .orphan_inputs import pages

log = logging.getLogger(__name__)
GRACE_S = 3600.0  # far longer than a render takes from its first file to its row's commit
IMAGES = "images"  # outputs/images/{task id}/: the lone images' results (pipeline/submission.py)


def is_task_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def sweep(storage: Storage, grace_s: float = GRACE_S, now: float | None = None) -> int:
    """Remove result folders with no task row, untouched for `grace_s`; returns how many."""
    cutoff = (time.time() if now is None else now) - grace_s
    folders = {path.name: path for path in old_folders(storage.outputs / IMAGES, cutoff)}
    removed = 0
    for page in pages(folders):
        with db.transaction() as cur:
            known = reads.known_tasks(cur, page)
        for name in page - known:
            shutil.rmtree(folders[name], ignore_errors=True)
            removed += 1
    if removed:
        log.warning("removed %d result folder(s) no task row names (a render cut short)", removed)
    return removed


def old_folders(parent: Path, cutoff: float) -> Iterator[Path]:
    """Folders named by a task id whose newest entry (and the folder itself) is older than `cutoff`."""
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and is_task_id(entry.name) and newest(Path(entry.path)) < cutoff:
            yield Path(entry.path)


def newest(folder: Path) -> float:
    """The latest change in the folder or to any file in it; +inf when it vanished meanwhile."""
    try:
        times = [folder.stat().st_mtime]
        with os.scandir(folder) as entries:
            times += [entry.stat(follow_symlinks=False).st_mtime for entry in entries]
    except FileNotFoundError:
        return float("inf")
    return max(times)
