"""Task and batch rows as the JSON the API sends and the pages render (one shape for both).

Links follow the blueprint serving the request (`links`): the API's own for an API request (bearer
keys), the pages' /page routes for everything else, so that a session cookie never reaches the API.
A row past retention (`expired_at` set) keeps its state but offers no file links: they would be 410.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import request, url_for

from cvunet_matting.db.rows import BatchCounts, BatchRow, TaskRow
from cvunet_matting.image.confidence import is_doubtful
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.states import BatchState, FailureCode, TaskState


def links() -> str:
    """The blueprint whose routes the answer links to: the API's for an API request, else the pages'."""
    return "api" if request.blueprint == "api" else "page"


def iso(value) -> str | None:
    return value.isoformat() if value else None


def has_alpha(row: TaskRow) -> bool:
    """Whether the task's result keeps an alpha channel (a matte, or a cut-out not flattened on colour)."""
    options = OutputOptions.from_dict(row["options"])
    flattened = options.bg_color is not None or options.has_backdrop
    return options.alpha_only or (not flattened and options.format in {"png", "webp"})


# What clients are told of a failure by its kind; refusals, crashes and timeouts keep their own
# reason (it speaks of the input), the rest may name server paths or internals: those stay in logs.
PUBLIC_REASONS: dict[str, str] = {
    FailureCode.STORAGE: "the shared storage could not be read or written; try again later",
    FailureCode.INTERNAL: "internal error on the worker; the details were logged",
}
UNKNOWN_REASON = "the image could not be processed; the details were logged"
OWN_REASONS = {
    FailureCode.REFUSED,
    FailureCode.CRASHED,
    FailureCode.TIMEOUT,
    FailureCode.NO_MATTE,
    FailureCode.EMPTY_SUBJECT,
}


def public_error(row: TaskRow) -> str | None:
    """A failure's short reason as clients may see it."""
    error, code = row.get("error"), row.get("error_code")
    if error is None or code in OWN_REASONS:
        return error
    if code is None:  # rows from before error codes
        return UNKNOWN_REASON if error.startswith("internal error") else error
    return PUBLIC_REASONS.get(code, UNKNOWN_REASON)


def expiry(row: TaskRow | BatchRow) -> dict[str, Any]:
    """Whether retention removed the row's files, and when."""
    return {"expired": row.get("expired_at") is not None, "expired_at": iso(row.get("expired_at"))}


def item_json(row: TaskRow) -> dict[str, Any]:
    """A task as a batch lists it: its state and the links that exist in that state."""
    tid, routes = str(row["id"]), links()
    item = {
        "task_id": tid,
        "filename": row["filename"],
        "state": row["state"],
        "error": public_error(row),
        "error_code": row.get("error_code"),
        "confidence": row.get("confidence"),
        "doubtful": is_doubtful(row.get("confidence")),
        **expiry(row),
        "status_url": url_for(f"{routes}.task_status", task_id=tid),
        "view_url": url_for("ui.task_view", task_id=tid),
    }
    if item["expired"]:
        return item
    if row.get("input_key"):  # none for a file refused on arrival: nothing was stored
        item["input_url"] = url_for(f"{routes}.task_input", task_id=tid)
    if row["state"] == TaskState.SUCCESS:
        item["result_url"] = url_for(f"{routes}.task_result", task_id=tid)
        if has_alpha(row):
            item["alpha_url"] = url_for(f"{routes}.task_alpha", task_id=tid)
    return item


def task_json(row: TaskRow) -> dict[str, Any]:
    return {
        **item_json(row),
        "batch_id": str(row["batch_id"]) if row["batch_id"] else None,
        "attempts": row["attempts"],
        # a re-render's source task (an id: its page and status answer only those who may see it)
        "rendered_from": str(row["rendered_from"]) if row.get("rendered_from") else None,
        "width": row["width"],
        "height": row["height"],
        "created_at": iso(row["created_at"]),
        "finished_at": iso(row["finished_at"]),
    }


def failure_json(row: TaskRow) -> dict[str, Any]:
    return {"task_id": str(row["id"]), "filename": row["filename"], "error": public_error(row)}


def listed_batch_json(batch: BatchRow, counts: BatchCounts) -> dict[str, Any]:
    """A batch as a listing shows it: its progress and links, without its items."""
    payload = batch_json(batch, counts, [], 0)
    for detail in ("items", "items_offset", "failures"):
        del payload[detail]
    return {**payload, "status_url": url_for(f"{links()}.batch_status", batch_id=payload["batch_id"])}


def batch_json(
    batch: BatchRow, counts: BatchCounts, rows: list[TaskRow], offset: int, failures: Sequence[TaskRow] = ()
) -> dict[str, Any]:
    """A batch's progress and one page of its items (from `offset`); zip_url once its ZIP exists
    (until it expires); the first of its failed images by name, whatever the page."""
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
        # e.g. the ZIP could not be written: the reason may name server paths, so only its gist
        "error": "the batch's ZIP could not be written; the details were logged" if batch.get("error") else None,
        **expiry(batch),
        "view_url": url_for("ui.batch_view", batch_id=bid),
        "items_offset": offset,
        "items": [item_json(r) for r in rows],
        "failures": [failure_json(r) for r in failures],
    }
    if batch["state"] == BatchState.DONE and batch["zip_path"] and not payload["expired"]:
        payload["zip_url"] = url_for(f"{links()}.batch_zip", batch_id=bid)
    return payload
