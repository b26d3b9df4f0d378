"""The work behind both the JSON API (bearer keys) and the pages' own JSON routes (a signed-in
session with its CSRF token): submit, poll, retry and download, always as the asking actor.

`via` is the blueprint whose links the answers carry ("api" or "page"); see presenters.
"""

from __future__ import annotations

from flask import current_app, g, jsonify, request, url_for
from werkzeug.exceptions import TooManyRequests

from cvunet_matting import db
from cvunet_matting.accounts import quotas
from cvunet_matting.accounts.users import Actor
from cvunet_matting.cleanup import deleting
from cvunet_matting.db import reads
from cvunet_matting.errors import InputError
from cvunet_matting.pipeline import cancelling, submission
from cvunet_matting.states import FINAL_TASK_STATES
from cvunet_matting.storage.files import Storage
from cvunet_matting.storage.redis_client import get_redis

from . import downloads, polling, waiting
from .api.schemas import FAILURES_LISTED
from .errors import error_json, status_for
from .inputs import check_api_fields, check_filename, load_batch, parse_id, parse_options, probe_uploads, task_row
from .presenters import batch_json, listed_batch_json, task_json
from .support import settings

# Unfinished work tells clients when to poll (polling.py: half the expected wait, sub-second in the
# body, whole seconds in Retry-After), and where to wait instead: ?wait= answers the moment it ends.
# Tighter polling only takes CPU from the workers (32 clients at 10/s cost a 2-core host a fifth of
# its matting throughput).


def actor() -> Actor:
    return g.actor


def hub() -> waiting.Hub:
    return current_app.extensions["cvunet.waits"]


def hint_for(row: dict) -> float:
    """Seconds until an unfinished task (or a batch, from its row) is worth asking about again."""
    return polling.retry_after(row, current_app.extensions["cvunet.pace"])


def with_hint(payload: dict, seconds: float, status_url: str) -> tuple[dict, dict]:
    """The payload with the poll hint and the wait URL, and the Retry-After header."""
    wait_url = f"{status_url}{'&' if '?' in status_url else '?'}wait={waiting.MAX_WAIT_S:g}"
    body = {**payload, "poll_after_s": seconds, "wait_url": wait_url}
    return body, {"Retry-After": polling.header(seconds)}


def accepted(payload: dict, location: str, row: dict | None = None):
    """202 for new work; the hint from the queue ahead of `row` (a task's or a batch's)."""
    seconds = hint_for(row) if row else polling.UNKNOWN_S
    body, headers = with_hint({**payload, "status_url": location}, seconds, location)
    return jsonify(body), 202, {"Location": location, **headers}


def poll_hint(payload: dict, finished: bool, seconds: float = polling.UNKNOWN_S, status_url: str | None = None):
    if finished:
        return jsonify(payload), 200
    body, headers = with_hint(payload, seconds, status_url or payload["status_url"])
    return jsonify(body), 200, headers


def task_read(task_id: str, who: Actor):
    return lambda: task_row(task_id, who)


def task_final(row: dict) -> bool:
    return row["state"] in FINAL_TASK_STATES


def held_task(task_id: str, wait: float, seen: str | None = None) -> dict:
    """The task's row: at once, or once final (or not `seen`, for the pages), or after `wait` seconds."""
    read = task_read(task_id, actor())
    row = read()  # a bad or unknown id answers at once, holding no slot
    stop = task_final if seen is None else (lambda row: task_final(row) or row["state"] != seen)
    return row if wait <= 0 or stop(row) else waiting.hold(hub(), (str(row["id"]),), read, stop, wait)


def submit_image(via: str, wait: float = 0.0):
    if via == "api":  # the pages send only what their own form holds
        check_api_fields(request.form, request.files, "file", one_file=True)
    upload = request.files.get("file")
    if upload is None:
        raise InputError("send the image as the multipart form field 'file'", code="no_file")
    options = parse_options(request.form)
    item = submission.Item(check_filename(upload.filename), upload.read())
    task_id = submission.submit_image(item, options, settings=settings(), owner=actor())
    row = None
    if wait > 0:
        try:  # submitted already: without a free slot it is a plain 202, never a refusal
            row = held_task(task_id, wait)
        except TooManyRequests:
            row = None
        if row is not None and task_final(row):
            return jsonify(task_json(row, via)), 200
    return accepted(
        {"task_id": task_id, "view_url": url_for("ui.task_view", task_id=task_id)},
        url_for(f"{via}.task_status", task_id=task_id),
        row or task_row(task_id, actor()),
    )


def submit_batch(via: str):
    if via == "api":
        check_api_fields(request.form, request.files, "files", one_file=False)
    options = parse_options(request.form)
    items, refused = probe_uploads(request.files.getlist("files"))
    if not items and not refused:
        raise InputError("send the images as multipart form fields named 'files'", code="no_file")
    if not items:
        first = refused[0]
        message = f"no file was accepted: {first['message']}"
        return error_json(first["code"], message, status_for(first["code"]), refused=refused)
    batch_id = submission.submit_batch(
        items, options, source="upload", settings=settings(), owner=actor(), refused=refused
    )
    view_url = url_for("ui.batch_view", batch_id=batch_id)
    batch, _, _ = load_batch(batch_id, 0, 0, actor())
    return accepted(
        {"batch_id": batch_id, "total": len(items), "refused": refused, "view_url": view_url},
        url_for(f"{via}.batch_status", batch_id=batch_id),
        {"state": "pending", "created_at": batch["created_at"]},
    )


def list_tasks(via: str, state: str | None, offset: int, limit: int):
    """The actor's tasks (an admin's: everyone's), newest first: what the history page shows."""
    who = actor()
    with db.transaction() as cur:
        rows, total = reads.task_listing(cur, None if who.is_admin else who.id, state, offset, limit)
    return jsonify({"tasks": [task_json(r, via) for r in rows], "total": total, "offset": offset, "limit": limit})


def list_batches(via: str, offset: int, limit: int):
    """The actor's batches (an admin's: everyone's), newest first, with their progress."""
    who = actor()
    with db.transaction() as cur:
        rows, total = reads.batch_listing(cur, None if who.is_admin else who.id, offset, limit)
        counts = reads.many_batch_counts(cur, [b["id"] for b in rows])
    batches = [listed_batch_json(b, counts[b["id"]], via) for b in rows]
    return jsonify({"batches": batches, "total": total, "offset": offset, "limit": limit})


def task_status(via: str, task_id: str, wait: float = 0.0, seen: str | None = None):
    row = held_task(task_id, wait, seen)
    if task_final(row):
        return poll_hint(task_json(row, via), finished=True)
    return poll_hint(task_json(row, via), finished=False, seconds=hint_for(row))


def retry(via: str, task_id: str, force: bool = False):
    """Requeue the actor's failed task. An input that crashed the worker up to the cap stays failed
    unless an admin forces it: otherwise each retry would cost the workers as many crashes again. An
    input refused for what it is (truncated, not an image, too many pixels) is retried only when forced."""
    from cvunet_matting.recovery.requeue import retry_task

    who = actor()
    row = task_row(task_id, who)
    if row.get("expired_at"):
        raise InputError("this task expired: retention removed its files, its input too", code="expired_task")
    if row["state"] == "failure" and row.get("error_code") == "crashed" and not (force and who.is_admin):
        raise InputError(
            "this input crashed the worker process too many times; only an admin can force a retry",
            code="poison_input",
        )
    if row["state"] == "failure" and not row["input_key"]:  # refused at upload or listing: nothing to run
        raise InputError(
            "nothing was stored for this file (it was refused on arrival): send it again", code="refused_input"
        )
    if row["state"] == "failure" and row.get("error_code") == "refused" and not force:
        raise InputError(
            f"this input was refused for what it is ({row.get('error')}): it would fail the same way; submit a"
            " fixed file, or force a retry if a limit has been raised since",
            code="refused_input",
        )
    quotas.precheck(who, 1, new=False)
    outcome = retry_task(row["id"])
    if outcome == "expired":
        raise InputError("this task expired or was deleted meanwhile: its files are gone", code="expired_task")
    if outcome != "requeued":
        raise InputError(f"task {task_id} is {row['state']}: only failed tasks can be retried", code="not_failed")
    return accepted({"task_id": str(row["id"]), "state": "pending"}, url_for(f"{via}.task_status", task_id=row["id"]))


def cancel_task(task_id: str) -> dict:
    """Cancel the actor's task if no worker has started it (409 `not_pending` otherwise)."""
    row = task_row(task_id, actor())
    cancelled = cancelling.cancel(get_redis(), task_id=row["id"])
    if not cancelled:
        raise InputError(
            f"task {task_id} is {row['state']}: only work no worker has started can be cancelled", code="not_pending"
        )
    return {"task_id": str(row["id"]), "cancelled": cancelled}


def cancel_batch(batch_id: str) -> dict:
    """Cancel what the actor's batch has not started; what runs finishes, and the batch ends as usual."""
    batch, _, _ = load_batch(batch_id, 0, 0, actor())
    return {"batch_id": str(batch["id"]), "cancelled": cancelling.cancel(get_redis(), batch_id=batch["id"])}


def delete_task(task_id: str) -> dict:
    """Delete the actor's finished task (not one of a batch's: 409 `in_batch`)."""
    row = task_row(task_id, actor())
    return deleting.delete_task(Storage(settings().data_dir), row["id"])


def delete_batch(batch_id: str) -> dict:
    """Delete the actor's finished batch, every image in it with it."""
    batch, _, _ = load_batch(batch_id, 0, 0, actor())
    return deleting.delete_batch(Storage(settings().data_dir), batch["id"])


def batch_progress(batch_id: str, who: Actor):
    """What a batch waiter compares: its state and counts (no items)."""

    def read() -> dict:
        batch, counts, _ = load_batch(batch_id, 0, 0, who)
        return {"state": batch["state"], **counts}

    return read


def failed_items(batch_id) -> list[dict]:
    """The batch's first failed images, in submission order (the tasks_batch index, a short walk)."""
    with db.transaction() as cur:
        cur.execute(
            "SELECT * FROM tasks WHERE batch_id = %s AND state = 'failure' ORDER BY position LIMIT %s",
            (batch_id, FAILURES_LISTED),
        )
        return cur.fetchall()


def batch_summary(via: str, batch_id: str, who: Actor):
    """A reader of the batch's status without items (counts, state, failed images), as events send it."""

    def read() -> dict:
        batch, counts, _ = load_batch(batch_id, 0, 0, who)
        return batch_json(batch, counts, [], 0, via, failed_items(batch["id"]) if counts["failure"] else [])

    return read


def batch_status(via: str, batch_id: str, offset: int, limit: int, wait: float = 0.0, seen: int | None = None):
    """A batch's page of items: at once, or once done (or, for the pages, once more than `seen` of its
    images have finished), or after `wait` seconds."""
    if wait > 0:
        read = batch_progress(batch_id, actor())
        first = read()  # a bad or unknown id answers at once, holding no slot

        def stop(progress: dict) -> bool:
            finished = progress["success"] + progress["failure"]
            return progress["state"] == "done" or (seen is not None and finished != seen)

        if not stop(first):
            waiting.hold(hub(), (parse_id(batch_id),), read, stop, wait)
    batch, counts, rows = load_batch(batch_id, offset, limit, actor())
    payload = batch_json(batch, counts, rows, offset, via, failed_items(batch["id"]) if counts["failure"] else [])
    if payload["state"] == "done":
        return poll_hint(payload, finished=True)
    seconds = hint_for({"state": "pending", "created_at": batch["created_at"]})
    return poll_hint(payload, False, seconds, url_for(f"{via}.batch_status", batch_id=payload["batch_id"]))


def task_file(kind: str, task_id: str, download: bool):
    row = task_row(task_id, actor())
    send = {"result": downloads.result, "alpha": downloads.matte, "input": downloads.original}[kind]
    return send(row, download)


def batch_zip(batch_id: str):
    batch, _, _ = load_batch(batch_id, 0, 0, actor())
    return downloads.batch_zip(batch)
