"""The work behind both the JSON API (bearer keys) and the pages' own JSON routes (a signed-in
session with its CSRF token): submit, poll, retry and download, always as the asking actor.

`via` is the blueprint whose links the answers carry ("api" or "page"); see presenters.
"""

from __future__ import annotations

from flask import current_app, g, jsonify, request, url_for

from . import downloads, polling, quotas, submission
from .accounts import Actor
from .errors import InputError
from .http_errors import error_json, status_for
from .http_support import settings
from .presenters import batch_json, task_json
from .states import FINAL_TASK_STATES
from .web_input import check_filename, load_batch, parse_options, probe_uploads, task_row

# Retry-After on new work and unfinished batches: how often clients should poll. Tighter polling
# only takes CPU from the workers (32 clients at 10/s cost a 2-core host a fifth of its matting
# throughput). Unfinished tasks get a hint from the queue ahead of them (see polling.py).
POLL_AFTER_S = "1"


def actor() -> Actor:
    return g.actor


def accepted(payload: dict, location: str):
    return jsonify({**payload, "status_url": location}), 202, {"Location": location, "Retry-After": POLL_AFTER_S}


def poll_hint(payload: dict, finished: bool, after: str = POLL_AFTER_S):
    return (jsonify(payload), 200) if finished else (jsonify(payload), 200, {"Retry-After": after})


def submit_image(via: str):
    upload = request.files.get("file")
    if upload is None:
        raise InputError("send the image as the multipart form field 'file'", code="no_file")
    options = parse_options(request.form)
    item = submission.Item(check_filename(upload.filename), upload.read())
    task_id = submission.submit_image(item, options, settings=settings(), owner=actor())
    return accepted(
        {"task_id": task_id, "view_url": url_for("ui.task_view", task_id=task_id)},
        url_for(f"{via}.task_status", task_id=task_id),
    )


def submit_batch(via: str):
    options = parse_options(request.form)
    items, refused = probe_uploads(request.files.getlist("files"))
    if not items and not refused:
        raise InputError("send the images as multipart form fields named 'files'", code="no_file")
    if not items:
        first = refused[0]
        message = f"no file was accepted: {first['message']}"
        return error_json(first["code"], message, status_for(first["code"]), refused=refused)
    batch_id = submission.submit_batch(items, options, source="upload", settings=settings(), owner=actor())
    view_url = url_for("ui.batch_view", batch_id=batch_id)
    return accepted(
        {"batch_id": batch_id, "total": len(items), "refused": refused, "view_url": view_url},
        url_for(f"{via}.batch_status", batch_id=batch_id),
    )


def task_status(via: str, task_id: str):
    row = task_row(task_id, actor())
    if row["state"] in FINAL_TASK_STATES:
        return poll_hint(task_json(row, via), finished=True)
    after = polling.retry_after(row, current_app.extensions["cvunet.pace"])
    return poll_hint(task_json(row, via), finished=False, after=str(after))


def retry(via: str, task_id: str, force: bool = False):
    """Requeue the actor's failed task. An input that crashed the worker up to the cap stays failed
    unless an admin forces it: otherwise each retry would cost the workers as many crashes again."""
    from .recovery import retry_task

    who = actor()
    row = task_row(task_id, who)
    if row["state"] == "failure" and row.get("error_code") == "crashed" and not (force and who.is_admin):
        raise InputError(
            "this input crashed the worker process too many times; only an admin can force a retry",
            code="poison_input",
        )
    quotas.precheck(who, 1, new=False)
    if retry_task(row["id"]) != "requeued":
        raise InputError(f"task {task_id} is {row['state']}: only failed tasks can be retried", code="not_failed")
    return accepted({"task_id": str(row["id"]), "state": "pending"}, url_for(f"{via}.task_status", task_id=row["id"]))


def batch_status(via: str, batch_id: str, offset: int, limit: int):
    payload = batch_json(*load_batch(batch_id, offset, limit, actor()), offset, via)
    return poll_hint(payload, payload["state"] == "done")


def task_file(kind: str, task_id: str, download: bool):
    row = task_row(task_id, actor())
    send = {"result": downloads.result, "alpha": downloads.matte, "input": downloads.original}[kind]
    return send(row, download)


def batch_zip(batch_id: str):
    batch, _, _ = load_batch(batch_id, 0, 0, actor())
    return downloads.batch_zip(batch)
