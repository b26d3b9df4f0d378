"""A batch's life after submission: chunks dispatched a few at a time, then its manifest and ZIP."""

from __future__ import annotations

from cvunet_matting import db
from cvunet_matting.config import Settings, get_settings
from cvunet_matting.db import reads, writes
from cvunet_matting.db.rows import BatchRow
from cvunet_matting.states import BatchState, TaskState
from cvunet_matting.storage.files import Storage, StorageAway

from . import dispatch
from .archives import write_batch_files

WINDOW = 2  # chunks in flight per batch: enough to keep every worker busy at a chunk's tail


def start(batch_id: str) -> None:
    """Dispatch the batch's first chunks; each chunk's callback dispatches the next."""
    fill_window(batch_id)


def fill_window(batch_id: str) -> None:
    """Dispatch queued chunks until WINDOW are in flight (a folder's listing calls it after each page)."""
    with db.transaction() as cur:
        in_flight = reads.dispatched_chunks(cur, batch_id)
    for _ in range(WINDOW - in_flight):
        if not dispatch_next(batch_id):
            return


def dispatch_next(batch_id: str) -> bool:
    """Dispatch the batch's next chunk with something to run (False: none was queued). Chunks with
    nothing left (every file unreadable, or cancelled) complete on the way, in a loop: a cancelled
    folder of 100,000 has 500 of them, one after another, too many for recursion."""
    while True:
        with db.transaction() as cur:
            idx = writes.claim_chunk(cur, batch_id)
            rows = reads.batch_tasks(cur, batch_id, idx) if idx is not None else []
        if idx is None:
            return False
        pending = [r for r in rows if r["state"] == TaskState.PENDING]
        if pending:
            dispatch.publish_chunk(pending, dispatch.chunk_done(batch_id, idx))
            with db.transaction() as cur:  # reconcile waits for this before it looks for them in Redis
                writes.chunk_published(cur, batch_id, idx)
            return True
        if not _complete(batch_id, idx):
            return True


def end_listing(batch_id: str, error: str | None = None) -> None:
    """A folder batch's listing is over: run its last chunks, or finalize if they are all done."""
    with db.transaction() as cur:
        undone = writes.end_listing(cur, batch_id, error)
    if undone:
        fill_window(batch_id)
    else:
        dispatch.finalize_batch(batch_id).apply_async()


def on_chunk_done(batch_id: str, idx: int) -> None:
    """A chunk's chord completed: dispatch the next chunk, or finalize when none is left."""
    if _complete(batch_id, idx):
        dispatch_next(batch_id)


def _complete(batch_id: str, idx: int) -> bool:
    """Mark a chunk done and finalize the batch if it was the last: whether more chunks remain."""
    with db.transaction() as cur:
        outcome = writes.complete_chunk(cur, batch_id, idx)
    if outcome == "last":
        dispatch.finalize_batch(batch_id).apply_async()
    return outcome == "more"


def finalizer_dead_after(settings: Settings) -> float:
    """Seconds after which a finalizer still 'finalizing' is dead: its task's hard limit has passed."""
    return settings.task_hard_limit + 60


class NotReady(Exception):
    """The batch cannot be finalized yet: a result is still being recorded."""


def check_ready(cur, batch: BatchRow, storage: Storage, give_up: bool = False) -> None:
    """Raise NotReady unless every row is final, StorageAway unless the output folder can be written
    (with `give_up`, the storage budget is spent: the write is tried, and its error recorded).

    Celery counts a chord's last image before that image's row is committed (and rows wait in the
    spool while PostgreSQL is away): a manifest written now could leave out a success."""
    pending = reads.batch_counts(cur, batch["id"])["pending"]
    if pending:
        raise NotReady(f"{pending} image(s) of batch {batch['id']} not recorded as finished yet")
    if not give_up and not storage.writable(storage.root / batch["output_dir"]):
        raise StorageAway(f"the output folder of batch {batch['id']} cannot be written")


def _archive_page(batch_id: str, after: int) -> list[dict]:
    with db.transaction() as cur:
        return reads.archive_page(cur, batch_id, after)


def finalize(batch_id: str, settings: Settings | None = None, rebuild: bool = False, give_up: bool = False) -> dict:
    """Write manifest.json and the batch ZIP into the batch's output folder (once per batch, or again
    with `rebuild`: an operator whose ZIP was lost; not once retention removed the results).

    Raises NotReady while that cannot be done yet, and StorageAway while storage cannot be written
    (the task retries both; the claim is let go, so the retry can take it). With `give_up` (storage
    stayed away past its budget) the batch ends instead, saying why."""
    settings = settings or get_settings()
    storage = Storage(settings.data_dir)
    with db.transaction() as cur:
        batch = reads.get_batch(cur, batch_id)
        if batch is None or batch.get("expired_at") or (batch["state"] == BatchState.DONE and not rebuild):
            return {"batch_id": batch_id, "finalized": False}
        if batch["state"] == BatchState.DONE:
            writes.reopen_batches(cur, [batch["id"]])
        check_ready(cur, batch, storage, give_up)
        if not writes.claim_finalize(cur, batch_id, stale_s=finalizer_dead_after(settings)):
            return {"batch_id": batch_id, "finalized": False}
    try:
        zip_path, manifest_path = write_batch_files(
            storage.root / batch["output_dir"], batch, lambda after: _archive_page(batch_id, after), storage
        )
    except OSError as exc:
        reason = f"could not write the batch files: {exc.strerror or exc}"
        with db.transaction() as cur:
            if give_up:  # the batch ends, saying why
                writes.finish_batch(cur, batch_id, None, None, error=reason)
            else:  # a hiccup: let the claim go (committed), and wait it out
                writes.release_finalize(cur, batch_id)
        if not give_up:
            raise StorageAway(reason) from exc
        return {"batch_id": batch_id, "finalized": False, "error": str(exc)}
    with db.transaction() as cur:
        writes.finish_batch(cur, batch_id, storage.relative(zip_path), storage.relative(manifest_path))
    return {"batch_id": batch_id, "finalized": True, "zip": storage.relative(zip_path)}
