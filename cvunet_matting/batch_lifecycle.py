"""A batch's life after submission: chunks dispatched a few at a time, then its manifest and ZIP."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO
from pathlib import Path

from . import db, dispatch
from .config import Settings, get_settings
from .db import reads, writes
from .storage import Storage, write_atomic

WINDOW = 2  # chunks in flight per batch: enough to keep every worker busy at a chunk's tail


def start(batch_id: str) -> None:
    """Dispatch the batch's first chunks; each chunk's callback dispatches the next."""
    for _ in range(WINDOW):
        dispatch_next(batch_id)


def dispatch_next(batch_id: str) -> bool:
    with db.transaction() as cur:
        idx = writes.claim_chunk(cur, batch_id)
        rows = reads.batch_tasks(cur, batch_id, idx) if idx is not None else []
    if idx is None:
        return False
    dispatch.publish_chunk(rows, dispatch.chunk_done(batch_id, idx))
    return True


def on_chunk_done(batch_id: str, idx: int) -> None:
    """A chunk's chord completed: dispatch the next chunk, or finalize when none is left."""
    with db.transaction() as cur:
        outcome = writes.complete_chunk(cur, batch_id, idx)
    if outcome == "last":
        dispatch.finalize_batch(batch_id).apply_async()
    elif outcome == "more":
        dispatch_next(batch_id)


def manifest_entry(row: dict) -> dict:
    return {
        "filename": row["filename"],
        "state": row["state"],
        "error": row["error"],
        "output": Path(row["output_path"]).name if row["state"] == "success" else None,
        "width": row["width"],
        "height": row["height"],
        "task_id": str(row["id"]),
    }


def build_zip(rows: list[dict], manifest: dict, storage: Storage) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
        for row in rows:
            if row["state"] == "success":
                archive.write(storage.root / row["output_path"], Path(row["output_path"]).name)
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
    return buffer.getvalue()


class NotReady(Exception):
    """The batch cannot be finalized yet: a result is still being recorded, or storage is away."""


def check_ready(cur, batch: dict, storage: Storage) -> None:
    """Raise NotReady unless every row is final and the output folder can be written.

    Celery counts a chord's last image before that image's row is committed (and rows wait in the
    spool while PostgreSQL is away): a manifest written now could leave out a success."""
    pending = reads.batch_counts(cur, batch["id"])["pending"]
    if pending:
        raise NotReady(f"{pending} image(s) of batch {batch['id']} not recorded as finished yet")
    if not storage.writable(storage.root / batch["output_dir"]):
        raise NotReady(f"the output folder of batch {batch['id']} cannot be written")


def finalize(batch_id: str, settings: Settings | None = None) -> dict:
    """Write manifest.json and the batch ZIP into the batch's output folder (once per batch).

    Raises NotReady while that cannot be done yet (the task retries it)."""
    settings = settings or get_settings()
    storage = Storage(settings.data_dir)
    with db.transaction() as cur:
        batch = reads.get_batch(cur, batch_id)
        if batch is None or batch["state"] != "running":
            return {"batch_id": batch_id, "finalized": False}
        check_ready(cur, batch, storage)
        if not writes.claim_finalize(cur, batch_id):
            return {"batch_id": batch_id, "finalized": False}
        rows = reads.batch_tasks(cur, batch_id)
    manifest = {
        "batch_id": batch_id,
        "source": batch["source"],
        "total": batch["total"],
        "items": [manifest_entry(r) for r in rows],
    }
    out_dir = storage.root / batch["output_dir"]
    try:
        manifest_path = write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2).encode())
        zip_path = write_atomic(out_dir / f"{out_dir.name}.zip", build_zip(rows, manifest, storage))
    except OSError as exc:  # e.g. a full disk: the batch ends, saying why, instead of hanging
        with db.transaction() as cur:
            writes.finish_batch(
                cur, batch_id, None, None, error=f"could not write the batch files: {exc.strerror or exc}"
            )
        return {"batch_id": batch_id, "finalized": False, "error": str(exc)}
    with db.transaction() as cur:
        writes.finish_batch(cur, batch_id, storage.relative(zip_path), storage.relative(manifest_path))
    return {"batch_id": batch_id, "finalized": True, "zip": storage.relative(zip_path)}
