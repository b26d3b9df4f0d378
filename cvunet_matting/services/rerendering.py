"""A finished cut-out rendered again with other options, from its kept raw matte and its input: no model,
no queue, no worker (image/rendering.py), answered within the request. The result is a new task (the
old one stays as it was), owned by the old one's owner and counted by the owner's quotas like a new
image; the new task keeps the raw matte too, so it can be rendered again in its turn.

A web process renders at most `slots` images at once (CVUNET_RENDERS): each takes a core for about
half a second at 12 MP (make bench-rerender), with the decoded photo and its result in memory. A
request that finds every slot taken waits up to WAIT_S for one, then is told to come back (503 `busy`
with Retry-After), as alpha mattes are (webapp/alpha_matte).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from cvunet_matting import db
from cvunet_matting.accounts import quotas
from cvunet_matting.accounts.users import Actor
from cvunet_matting.config import Settings
from cvunet_matting.db import reads, writes
from cvunet_matting.db.rows import BatchRow, TaskRow
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.rendering import Rendered, render
from cvunet_matting.image.reuse_key import idem_key
from cvunet_matting.pipeline import render_batch
from cvunet_matting.pipeline.render_job import source_files
from cvunet_matting.pipeline.submission import store_background
from cvunet_matting.states import BatchState, TaskState
from cvunet_matting.storage.files import Storage, StorageAway, raw_matte_path, result_files, write_atomic
from cvunet_matting.storage.naming import unique_names

from .lookup import batch_for, task_for

WAIT_S = 2.0  # how long a request waits for a free slot: it holds one of its process's gunicorn threads
RETRY_AFTER_S = 1  # a busy answer's Retry-After: a render takes about half a second at 12 MP
# PNG strips per render. Two: at 12 MP a default render is mostly the JPEG's decode and a 48 MB deflate,
# and the deflate split in two brings it under half a second (make bench-rerender prints both); the
# slots (CVUNET_RENDERS) bound the web's cores at slots x THREADS.
THREADS = 2
TEMP_PREFIX = ".raw."  # as the worker's: `.NAME.raw.png` plus atomic_file's own could pass 255 bytes


class Renders:
    """One web process's re-renders: at most `slots` at a time."""

    def __init__(self, slots: int):
        self.slots = max(1, slots)
        self._free = threading.BoundedSemaphore(self.slots)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if not self._free.acquire(timeout=WAIT_S):
            raise InputError(
                f"this web process is rendering {self.slots} images already; try again shortly",
                code=ErrorCode.BUSY,
                retry_after=RETRY_AFTER_S,
            )
        try:
            yield
        finally:
            self._free.release()

    def rerender(self, actor: Actor, task_id: str, options: OutputOptions, settings: Settings) -> TaskRow:
        """The new, finished task's row. Raises InputError: not_found (not the actor's), expired or
        no_matte (410), not_done (not a success), a quota's, busy."""
        row = task_for(actor, task_id)
        check_renderable(row)
        owner = owner_of(row, actor)
        quotas.precheck(owner, 1)  # the cheap check, before any pixel is decoded
        storage = Storage(settings.data_dir)
        with self.slot():
            clock = time.perf_counter()
            data, matte = stored_inputs(storage, row)
            rendered = render(data, matte, options, settings.max_pixels, THREADS, options.background)
            seconds = time.perf_counter() - clock
        return record(storage, row, owner, options, rendered, (data, matte), seconds)


def rerender_batch(actor: Actor, batch_id: str, options: OutputOptions, settings: Settings) -> str:
    """A finished batch drawn again with `options` into a new batch (pipeline/render_batch.py, on the
    bookkeeping worker): the new batch's id. Raises InputError: not_found (not the actor's), expired
    (410), not_done (409: not finished yet), a quota's."""
    batch = batch_for(actor, batch_id).batch
    if batch.get("expired_at"):
        raise InputError("retention removed this batch's files: submit its images again", code=ErrorCode.EXPIRED)
    if batch["state"] != BatchState.DONE:
        raise InputError(
            f"batch {batch['id']} is {batch['state']}: only a finished batch can be rendered again",
            code=ErrorCode.NOT_DONE,
        )
    return render_batch.submit(batch, options, owner_of(batch, actor), settings)


def check_renderable(row: TaskRow) -> None:
    if row.get("expired_at"):
        raise InputError("retention removed this task's files: submit the image again", code=ErrorCode.EXPIRED)
    if row["state"] != TaskState.SUCCESS:
        raise InputError(
            f"task {row['id']} is {row['state']}: only a finished cut-out can be rendered again",
            code=ErrorCode.NOT_DONE,
        )


def owner_of(row: TaskRow | BatchRow, actor: Actor) -> Actor | None:
    """Whose the new task (or batch) is, and whose quotas it counts for: the old one's owner (an admin
    rendering a user's work renders it for the user); None for the operator's work."""
    if row["owner_id"] is None:
        return None
    if actor.id == row["owner_id"]:
        return actor
    with db.transaction() as cur:
        user = reads.get_user(cur, row["owner_id"])
    return Actor.from_row(user) if user else None


def stored_inputs(storage: Storage, row: TaskRow) -> tuple[bytes, bytes]:
    """The task's input and raw matte, each read once; no_matte (410) when either is gone."""
    try:
        return source_files(storage, row)
    except StorageAway as exc:  # the data root cannot be read now: 503, as other storage outages
        raise InputError(str(exc), code=ErrorCode.STORAGE_UNAVAILABLE) from exc


def record(
    storage: Storage,
    row: TaskRow,
    owner: Actor | None,
    options: OutputOptions,
    rendered: Rendered,
    stored: tuple[bytes, bytes],
    seconds: float,
) -> TaskRow:
    """Write the new task's files (its raw matte, then its result), then its row, finished, under the
    owner's quota lock; a refusal there removes the files again."""
    data, matte = stored
    task_id = uuid.uuid4()
    name = unique_names([row["filename"]], options.extension)[0]
    output_path = f"outputs/images/{task_id}/{name}"
    new = {"id": task_id, "filename": row["filename"], "input_key": row["input_key"], "options": options.to_dict()}
    new |= {"output_path": output_path, "rendered_from": row["id"]}
    target = storage.root / output_path
    try:
        write_atomic(raw_matte_path(target), matte, temp_prefix=TEMP_PREFIX)
        write_atomic(target, rendered.data)
        with db.transaction() as cur:
            quotas.reserve(cur, owner, 1)
            store_background(storage, options)  # a new upload's, read by this task from now on
            writes.create_tasks(cur, [new])
            if owner is not None and owner.id is not None:
                writes.set_owner(cur, owner.id, task_ids=[task_id])
            timings = {"render": round(seconds, 4)}
            writes.record_rendered(cur, task_id, rendered.width, rendered.height, row.get("confidence"), timings)
            register(cur, row, new, owner, options, rendered)
    except BaseException:
        remove_files(target)
        raise
    if not storage.input_path(row["input_key"]).exists():  # deleted with the old task meanwhile
        storage.put_input(data)
    store_background(storage, options)  # as the input: an orphan sweep may have moved it aside meanwhile
    with db.transaction() as cur:
        created = reads.get_task(cur, task_id)
    if created is None:  # nobody else knows its id yet: only a broken database gets here
        raise RuntimeError(f"the re-rendered task {task_id} was not recorded")
    return created


def register(cur, row: TaskRow, new: dict, owner: Actor | None, options: OutputOptions, rendered: Rendered) -> None:
    """The new result, for reuse by the owner's identical task, under the key the worker would compute
    (image/reuse_key.py): a result whose model is not recorded (made before migration 012) is not."""
    version = row.get("model_version")
    if not version:
        return
    key = idem_key(row["input_key"], version, options, owner.id if owner else None)
    size = (rendered.width, rendered.height)
    writes.register_result(cur, new["id"], key, version, new["output_path"], size, row.get("confidence"))


def remove_files(target: Path) -> None:
    for path in result_files(target):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        target.parent.rmdir()
