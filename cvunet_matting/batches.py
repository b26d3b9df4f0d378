"""Submitting work: single images, and batches fanned out as chords a chunk at a time."""

from __future__ import annotations

import json
import uuid
import zipfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from celery import chord, group

from . import db, jobs, queries
from .celery_app import app
from .config import Settings, get_settings
from .errors import InputError
from .imaging import IMAGE_SUFFIXES, OutputOptions, probe
from .naming import unique_names
from .storage import Storage, write_atomic

WINDOW = 2  # chunks in flight per batch: enough to keep every worker busy at a chunk's tail


@dataclass
class Item:
    """An image to submit: upload bytes, or a file read only when it is stored."""

    filename: str
    content: bytes | None = None
    path: Path | None = None

    @property
    def data(self) -> bytes:
        return self.content if self.content is not None else self.path.read_bytes()


def folder_items(folder: str, settings: Settings) -> list[Item]:
    """Image files under a server-side folder, refused unless it lies inside an allowed root."""
    path = Path(folder).expanduser().resolve()
    root = next((r for r in settings.allowed_roots if path.is_relative_to(r)), None)
    if root is None:
        raise InputError(f"folder {folder!r} is outside the allowed roots", code="forbidden_path")
    if not path.is_dir():
        raise InputError(f"folder {folder!r} does not exist", code="not_found")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    # A symbolic link inside the folder must not reach outside the allowed root either.
    files = [p for p in files if p.resolve().is_relative_to(root)]
    if not files:
        raise InputError(f"no image files in {folder!r}", code="empty_folder")
    return [Item(str(p.relative_to(path)), path=p) for p in files]


def _signature(row: dict):
    kwargs = {
        "input_key": row["input_key"],
        "options": row["options"],
        "output_path": row["output_path"],
        "batch_id": str(row["batch_id"]) if row.get("batch_id") else None,
    }
    # By name: the web process enqueues without importing the worker side (tasks -> model).
    return app.signature("cvunet_matting.matte_image", kwargs=kwargs, task_id=str(row["id"]), immutable=True)


def submit_image(item: Item, options: OutputOptions, settings: Settings | None = None) -> str:
    """Store the upload, record it, enqueue it; bad images are refused here (InputError)."""
    settings = settings or get_settings()
    probe(item.data, settings.max_pixels)
    storage = Storage(settings.data_dir)
    task_id = uuid.uuid4()
    name = unique_names([item.filename], options.extension)[0]
    row = {
        "id": task_id,
        "filename": item.filename,
        "input_key": storage.put_input(item.data),
        "options": options.to_dict(),
        "output_path": f"outputs/images/{task_id}/{name}",
    }
    with db.transaction() as cur:
        jobs.create_tasks(cur, [row])
    _signature(row).apply_async()
    return str(task_id)


def submit_batch(
    items: list[Item], options: OutputOptions, source: str = "upload", settings: Settings | None = None
) -> str:
    """Record every item, then dispatch the first chunks; later chunks follow as earlier ones finish."""
    settings = settings or get_settings()
    storage = Storage(settings.data_dir)
    batch_id = uuid.uuid4()
    run_dir = storage.relative(storage.new_run_dir())
    names = unique_names([i.filename for i in items], options.extension)
    rows = [
        {
            "id": uuid.uuid4(),
            "batch_id": batch_id,
            "chunk": pos // settings.batch_chunk,
            "position": pos,
            "filename": item.filename,
            "input_key": storage.put_input(item.data),
            "options": options.to_dict(),
            "output_path": f"{run_dir}/{name}",
        }
        for pos, (item, name) in enumerate(zip(items, names, strict=True))
    ]
    chunks = (len(rows) + settings.batch_chunk - 1) // settings.batch_chunk
    with db.transaction() as cur:
        jobs.create_batch(cur, batch_id, source, len(rows), options.to_dict(), run_dir, chunks)
        jobs.create_tasks(cur, rows)
    for _ in range(WINDOW):
        dispatch_next(str(batch_id))
    return str(batch_id)


def publish_chunk(batch_id: str, idx: int, rows: list[dict]) -> None:
    callback = app.signature("cvunet_matting.chunk_done", args=(batch_id, idx), immutable=True)
    chord(group(_signature(r) for r in rows), callback).apply_async()


def dispatch_next(batch_id: str) -> bool:
    with db.transaction() as cur:
        idx = jobs.claim_chunk(cur, batch_id)
        rows = queries.batch_tasks(cur, batch_id, idx) if idx is not None else []
    if idx is None:
        return False
    publish_chunk(batch_id, idx, rows)
    return True


def on_chunk_done(batch_id: str, idx: int) -> None:
    with db.transaction() as cur:
        outcome = jobs.complete_chunk(cur, batch_id, idx)
    if outcome == "last":
        app.send_task("cvunet_matting.finalize_batch", args=(batch_id,))
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


def finalize(batch_id: str, settings: Settings | None = None) -> dict:
    """Write manifest.json and the batch ZIP into the batch's output folder (once per batch)."""
    settings = settings or get_settings()
    storage = Storage(settings.data_dir)
    with db.transaction() as cur:
        if not jobs.claim_finalize(cur, batch_id):
            return {"batch_id": batch_id, "finalized": False}
        batch, rows = queries.get_batch(cur, batch_id), queries.batch_tasks(cur, batch_id)
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
            jobs.finish_batch(
                cur, batch_id, None, None, error=f"could not write the batch files: {exc.strerror or exc}"
            )
        return {"batch_id": batch_id, "finalized": False, "error": str(exc)}
    with db.transaction() as cur:
        jobs.finish_batch(cur, batch_id, storage.relative(zip_path), storage.relative(manifest_path))
    return {"batch_id": batch_id, "finalized": True, "zip": storage.relative(zip_path)}
