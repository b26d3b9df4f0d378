"""A finished batch's files: manifest.json and the ZIP of its results, written to disk as a stream.

The ZIP goes straight into a temporary file beside its final name and is renamed into place, so
memory stays bounded whatever the batch's size (zipfile copies each result in small blocks) and a
reader never sees half an archive. zipfile switches to ZIP64 by itself past 4 GB or 65,535 entries.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from .storage import Storage, atomic_file, write_atomic


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


def build_manifest(batch: dict, rows: list[dict]) -> dict:
    return {
        "batch_id": str(batch["id"]),
        "source": batch["source"],
        "total": batch["total"],
        "items": [manifest_entry(r) for r in rows],
    }


def write_zip(path: Path, rows: list[dict], manifest: dict, storage: Storage) -> Path:
    """The successful results and the manifest, stored uncompressed (PNG, WebP and JPEG already are)."""
    with atomic_file(path) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for row in rows:
            if row["state"] == "success":
                archive.write(storage.root / row["output_path"], Path(row["output_path"]).name)
        archive.writestr("manifest.json", json.dumps(manifest, indent=2))
    return path


def write_batch_files(out_dir: Path, batch: dict, rows: list[dict], storage: Storage) -> tuple[Path, Path]:
    """(zip, manifest) in the batch's output folder."""
    manifest = build_manifest(batch, rows)
    manifest_path = write_atomic(out_dir / "manifest.json", json.dumps(manifest, indent=2).encode())
    return write_zip(out_dir / f"{out_dir.name}.zip", rows, manifest, storage), manifest_path
