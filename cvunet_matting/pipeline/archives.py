"""A finished batch's files: manifest.json and the ZIP of its results, written to disk as a stream.

Rows are read a page at a time, the manifest is written entry by entry and the ZIP goes straight
into a temporary file beside its final name, renamed into place: memory stays bounded whatever the
batch's size (zipfile copies each result in small blocks and keeps only its small directory entry)
and a reader never sees half a file. zipfile switches to ZIP64 by itself past 4 GB or 65,535 entries.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from cvunet_matting.db.rows import BatchRow
from cvunet_matting.states import TaskState
from cvunet_matting.storage.files import Storage, atomic_file

# A page of the batch's rows, after a position: (columns named in reads.ARCHIVE_COLUMNS).
RowPages = Callable[[int], list[dict]]


def manifest_entry(row: dict) -> dict:
    return {
        "filename": row["filename"],
        "state": row["state"],
        "error": row["error"],
        "output": Path(row["output_path"]).name if row["state"] == TaskState.SUCCESS else None,
        "width": row["width"],
        "height": row["height"],
        "confidence": row.get("confidence"),
        "task_id": str(row["id"]),
        "rendered_from": str(row["rendered_from"]) if row.get("rendered_from") else None,
    }


def each_row(pages: RowPages) -> Iterator[dict]:
    after = -1
    while rows := pages(after):
        yield from rows
        after = rows[-1]["position"]


def write_manifest(path: Path, batch: BatchRow, pages: RowPages) -> Path:
    """The manifest, the same JSON as one json.dumps of it would give, written an item at a time."""
    head = {"batch_id": str(batch["id"]), "source": batch["source"], "total": batch["total"]}
    with atomic_file(path) as fh:
        fh.write(json.dumps(head, indent=2)[:-2].encode() + b',\n  "items": [')
        for n, row in enumerate(each_row(pages)):
            item = json.dumps(manifest_entry(row), indent=2).replace("\n", "\n    ")
            fh.write((",\n    " if n else "\n    ").encode() + item.encode())
        fh.write(b"\n  ]\n}")
    return path


def write_zip(path: Path, pages: RowPages, manifest: Path, storage: Storage) -> Path:
    """The successful results and the manifest, stored uncompressed (PNG, WebP and JPEG already are)."""
    with atomic_file(path) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for row in each_row(pages):
            if row["state"] == TaskState.SUCCESS:
                archive.write(storage.root / row["output_path"], Path(row["output_path"]).name)
        archive.write(manifest, "manifest.json")
    return path


def write_batch_files(out_dir: Path, batch: BatchRow, pages: RowPages, storage: Storage) -> tuple[Path, Path]:
    """(zip, manifest) in the batch's output folder."""
    manifest = write_manifest(out_dir / "manifest.json", batch, pages)
    return write_zip(out_dir / f"{out_dir.name}.zip", pages, manifest, storage), manifest
