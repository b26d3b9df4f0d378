"""Task and batch rows as the JSON the API sends and the pages render (one shape for both)."""

from __future__ import annotations

from flask import url_for

from .encoding import OutputOptions


def iso(value) -> str | None:
    return value.isoformat() if value else None


def has_alpha(row: dict) -> bool:
    """Whether the task's result keeps an alpha channel (a matte, or a cut-out not flattened on colour)."""
    options = OutputOptions.from_dict(row["options"])
    return options.alpha_only or (options.bg_color is None and options.format in {"png", "webp"})


def item_json(row: dict) -> dict:
    """A task as a batch lists it: its state and the links that exist in that state."""
    tid = str(row["id"])
    item = {
        "task_id": tid,
        "filename": row["filename"],
        "state": row["state"],
        "error": row["error"],
        "status_url": url_for("api.task_status", task_id=tid),
        "view_url": url_for("ui.task_view", task_id=tid),
        "input_url": url_for("api.task_input", task_id=tid),
    }
    if row["state"] == "success":
        item["result_url"] = url_for("api.task_result", task_id=tid)
        if has_alpha(row):
            item["alpha_url"] = url_for("api.task_alpha", task_id=tid)
    return item


def task_json(row: dict) -> dict:
    return {
        **item_json(row),
        "batch_id": str(row["batch_id"]) if row["batch_id"] else None,
        "attempts": row["attempts"],
        "width": row["width"],
        "height": row["height"],
        "created_at": iso(row["created_at"]),
        "finished_at": iso(row["finished_at"]),
    }


def batch_json(batch: dict, counts: dict, rows: list[dict], offset: int) -> dict:
    """A batch's progress and one page of its items (from `offset`); zip_url once its ZIP exists."""
    bid = str(batch["id"])
    payload = {
        "batch_id": bid,
        "state": batch["state"],
        "total": batch["total"],
        "done": counts["success"],
        "failed": counts["failure"],
        "pending": counts["pending"],
        "created_at": iso(batch["created_at"]),
        "finished_at": iso(batch["finished_at"]),
        "error": batch.get("error"),  # e.g. the ZIP could not be written
        "view_url": url_for("ui.batch_view", batch_id=bid),
        "items_offset": offset,
        "items": [item_json(r) for r in rows],
    }
    if batch["state"] == "done" and batch["zip_path"]:
        payload["zip_url"] = url_for("api.batch_zip", batch_id=bid)
    return payload
