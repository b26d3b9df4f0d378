"""Input files no task reads: removed in the workers' hourly round once older than
CVUNET_ORPHAN_INPUT_HOURS.

An upload is stored only after its quota check found room (pipeline/submission.py), so a refused one
leaves nothing; what can still be left is rarer: a file stored for a row whose transaction then
failed (PostgreSQL went away, the web process was killed mid-request), a folder page whose quota ran
out, what a delete or retention round stopped part-way left behind.

Never an input a task reads (any unexpired row names it), nor one being written or recorded now:
younger than the grace, it is not looked at, and its temporary file neither. One file the sweep finds
unread may be reused by an upload at that very moment (the same bytes again): the sweep moves it
aside before its last look at the rows, and the upload, once its row is committed, stores the file
again when it is missing (submission.keep_inputs). Either the last look sees the new row, and the
file goes back, or the upload sees the file gone, and writes it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from cvunet_matting import db
from cvunet_matting.db import reads
from cvunet_matting.storage.files import Storage

log = logging.getLogger(__name__)
PAGE = 1000  # keys looked up per query
ASIDE = ".orphan."  # a file moved aside for its last look; put back by the next sweep if one died there
HEX = frozenset("0123456789abcdef")


def is_key(name: str) -> bool:
    return len(name) == 64 and set(name) <= HEX


def sweep(storage: Storage, grace_s: float, now: float | None = None) -> dict:
    """Remove unread inputs and dead writers' temporary files older than `grace_s`; returns counts."""
    cutoff = (time.time() if now is None else now) - grace_s
    folders = input_folders(storage)
    put_back(folders)
    removed = sum(remove_unread(storage, page) for page in pages(old_inputs(folders, cutoff)))
    return {"inputs": removed, "partial": remove_dead_parts(folders, cutoff)}


def input_folders(storage: Storage) -> list[Path]:
    """`inputs/aa/`: the first two characters of each key."""
    try:
        return sorted(p for p in storage.inputs.iterdir() if len(p.name) == 2 and p.is_dir())
    except FileNotFoundError:
        return []


def put_back(folders: list[Path]) -> None:
    """A sweep that died between moving a file aside and its last look: the file goes back, and this
    sweep looks at it again like any other."""
    for folder in folders:
        for aside in folder.glob(f"{ASIDE}*"):
            key = aside.name.removeprefix(ASIDE)
            if is_key(key):
                with contextlib.suppress(FileNotFoundError):  # another sweep put it back first
                    os.replace(aside, folder / key)


def old_inputs(folders: list[Path], cutoff: float) -> Iterator[str]:
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                if is_key(entry.name) and stat_time(entry) < cutoff:
                    yield entry.name


def stat_time(entry: os.DirEntry) -> float:
    try:
        return entry.stat().st_mtime
    except FileNotFoundError:  # removed meanwhile (retention, a delete)
        return float("inf")


def pages(keys: Iterable[str]) -> Iterator[set[str]]:
    it = iter(keys)
    while page := set(itertools.islice(it, PAGE)):
        yield page


def unread(keys: set[str]) -> set[str]:
    with db.transaction() as cur:
        return reads.inputs_no_longer_used(cur, keys)


def remove_unread(storage: Storage, keys: set[str]) -> int:
    """Of these keys, remove the files no kept task reads: moved aside, looked at once more, removed."""
    aside = {}
    for key in unread(keys):
        path = storage.input_path(key)
        try:
            os.rename(path, path.with_name(ASIDE + key))
        except FileNotFoundError:
            continue
        aside[key] = path
    still_unread = unread(set(aside))
    for key, path in aside.items():
        if key in still_unread:
            path.with_name(ASIDE + key).unlink(missing_ok=True)
        else:  # an upload of the same bytes recorded a task meanwhile
            with contextlib.suppress(FileNotFoundError):  # put back already (put_back, by a second sweep)
                os.replace(path.with_name(ASIDE + key), path)
    if still_unread:
        log.info("removed %d input file(s) no task reads", len(still_unread))
    return len(still_unread)


def remove_dead_parts(folders: list[Path], cutoff: float) -> int:
    """Temporary files (`.KEY.xxxxxxxx.part`, storage.files.atomic_file) of writers long dead."""
    removed = 0
    for folder in folders:
        for part in folder.glob(".*.part"):
            try:
                if part.stat().st_mtime < cutoff:
                    part.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
    return removed
