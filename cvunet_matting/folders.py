"""Finding image files in a folder tree: one walker for the CLI's local matting and folder batches."""

from __future__ import annotations

from pathlib import Path

from .imaging import IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    """Every file under `folder` (recursively) whose suffix names an image format, in path order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
