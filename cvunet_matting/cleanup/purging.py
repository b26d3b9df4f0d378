"""Removing a task's or a batch's files from the data root: the one place that knows which files
finished work leaves (its result, the alpha and raw mattes beside it, a single image's own folder, a
batch's ZIP, manifest and folder, inputs no kept task reads). Retention and deleting both end here.

Every removal tolerates a file already gone: a sweep run twice, or after a crash part-way, is harmless.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cvunet_matting.db.rows import BatchRow
from cvunet_matting.storage.files import Storage, result_files


def remove(paths: Iterable[Path]) -> int:
    """Unlink each path; how many were there."""
    removed = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def remove_task_files(storage: Storage, tasks: Sequence[Mapping[str, Any]]) -> int:
    """Each result, then the alpha matte derived from it (if the web ever served one) and the raw matte
    kept for re-renders (storage.result_files): in that order,
    so that a matte being derived meanwhile is removed by one side or the other (alpha_matte). A
    single image's own folder goes with them once empty; a batch's waits for its batch."""
    removed = 0
    for task in tasks:
        if not task["output_path"]:
            continue
        result = storage.root / task["output_path"]
        removed += remove(result_files(result))
        if not task.get("batch_id"):
            with contextlib.suppress(OSError):  # not empty (a file someone put there): left alone
                result.parent.rmdir()
    return removed


def input_keys(tasks: Iterable[Mapping[str, Any]]) -> set[str]:
    """The stored inputs these task rows read: each one's input, and the background image its options
    name (a row's `options`, or a `bg_image` column selected from them); '' (nothing stored) left out."""
    keys = set()
    for task in tasks:
        options = task.get("options") or {}
        keys |= {task.get("input_key") or "", task.get("bg_image") or options.get("bg_image") or ""}
    return keys - {""}


def remove_inputs(storage: Storage, keys: Iterable[str]) -> int:
    """Inputs by key: only those the caller found no kept task reads (reads.inputs_no_longer_used)."""
    return remove(storage.input_path(key) for key in keys)


def remove_batch_files(storage: Storage, batch: BatchRow) -> int:
    """The ZIP and manifest, then the batch folder if nothing else is left in it."""
    removed = remove(storage.root / p for p in (batch["zip_path"], batch["manifest_path"]) if p)
    with contextlib.suppress(OSError):  # not empty (a file someone put there): left alone
        Path(storage.root / batch["output_dir"]).rmdir()
    return removed
