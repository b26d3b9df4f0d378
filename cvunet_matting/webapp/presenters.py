"""Task and batch rows as the JSON the API sends and the pages render (one shape for both).

Links follow the blueprint serving the request (`links`): the API's own for an API request (bearer
keys), the pages' /page routes for everything else, so that a session cookie never reaches the API.
A row past retention (`expired_at` set) keeps its state but offers no file links: they would be 410.
"""

from __future__ import annotations

from flask import request, url_for

from cvunet_matting.image.encoding import OutputOptions


def links() -> str:
    """The blueprint whose routes the answer links to: the API's for an API request, else the pages'."""
    return "api" if request.blueprint == "api" else "page"


def iso(value) -> str | None:
    return value.isoformat() if value else None


def has_alpha(row: dict) -> bool:
    """Whether the task's result keeps an alpha channel (a matte, or a cut-out not flattened on colour)."""
    options = OutputOptions.from_dict(row["options"])
    return options.alpha_only or (options.bg_color is None and options.format in {"png", "webp"})


# What clients are told of a failure by its kind; refusals, crashes and timeouts keep their own
# reason (it speaks of the input), the rest may name server paths or internals: those stay in logs.
PUBLIC_REASONS = {
    "storage": "the shared storage could not be read or written; try again later",
    "internal": "internal error on the worker; the details were logged",
}
OWN_REASONS = {"refused", "crashed", "timeout"}


def public_error(row: dict) -> str | None:
    """A failure's short reason as clients may see it."""
    error, code = row.get("error"), row.get("error_code")
    if error is None or code in OWN_REASONS:
        return error
    if code is None and not error.startswith("internal error"):
        return error  # rows from before error codes
    return PUBLIC_REASONS.get(code, "the image could not be processed; the details were logged")


def expiry(row: dict) -> dict:
    """Whether retention removed the row's files, and when."""
    return {"expired": row.get("expired_at") is not None, "expired_at": iso(row.get("expired_at"))}


def item_json(row: dict) -> dict:
    """A task as a batch lists it: its state and the links that exist in that state."""
    tid, routes = str(row["id"]), links()
    item = {
        "task_id": tid,
        "filename": row["filename"],
        "state": row["state"],
        "error": public_error(row),
        "error_code": row.get("error_code"),
        **expiry(row),
        "status_url": url_for(f"{routes}.task_status", task_id=tid),
        "view_url": url_for("ui.task_view", task_id=tid),
    }
    if item["expired"]:
        return item
    if row.get("input_key"):  # none for a file refused on arrival: nothing was stored
        item["input_url"] = url_for(f"{routes}.task_input", task_id=tid)
    if row["state"] == "success":
        item["result_url"] = url_for(f"{routes}.task_result", task_id=tid)
        if has_alpha(row):
            item["alpha_url"] = url_for(f"{routes}.task_alpha", task_id=tid)
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


def failure_json(row: dict) -> dict:
    return {"task_id": str(row["id"]), "filename": row["filename"], "error": public_error(row)}


def listed_batch_json(batch: dict, counts: dict) -> dict:
    """A batch as a listing shows it: its progress and links, without its items."""
    payload = batch_json(batch, counts, [], 0)
    for detail in ("items", "items_offset", "failures"):
        del payload[detail]
    return {**payload, "status_url": url_for(f"{links()}.batch_status", batch_id=payload["batch_id"])}


def batch_json(batch: dict, counts: dict, rows: list[dict], offset: int, failures: list[dict] = ()) -> dict:
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
    if batch["state"] == "done" and batch["zip_path"] and not payload["expired"]:
        payload["zip_url"] = url_for(f"{links()}.batch_zip", batch_id=bid)
    return payload
