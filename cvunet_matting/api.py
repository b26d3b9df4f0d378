"""The JSON API under /api/v1: submit images, batches and folders; poll status; download results.

Each view is served on the operation api_routes declares under its name (see api_spec.router).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, current_app, jsonify, request, url_for

from . import downloads, polling, submission
from .api_auth import authenticate
from .api_routes import OPERATIONS
from .api_spec import PREFIX, router
from .errors import InputError
from .http_errors import error_json, status_for
from .http_support import settings
from .openapi import document
from .presenters import batch_json, task_json
from .states import FINAL_TASK_STATES
from .web_input import load_batch, parse_options, probe_uploads, task_row

bp = Blueprint("api", __name__, url_prefix=PREFIX)
bp.before_request(authenticate)
route = router(bp, OPERATIONS)
# Retry-After on new work and unfinished batches: how often clients should poll. Tighter polling
# only takes CPU from the workers (32 clients at 10/s cost a 2-core host a fifth of its matting
# throughput). Unfinished tasks get a hint from the queue ahead of them (see polling.py).
POLL_AFTER_S = "1"


def accepted(payload: dict, location: str):
    return jsonify({**payload, "status_url": location}), 202, {"Location": location, "Retry-After": POLL_AFTER_S}


def poll_hint(payload: dict, finished: bool, after: str = POLL_AFTER_S):
    return (jsonify(payload), 200) if finished else (jsonify(payload), 200, {"Retry-After": after})


@route
def submit_image():
    upload = request.files.get("file")
    if upload is None:
        raise InputError("send the image as the multipart form field 'file'", code="no_file")
    options = parse_options(request.form)
    item = submission.Item(upload.filename or "image", upload.read())
    task_id = submission.submit_image(item, options, settings=settings())
    return accepted(
        {"task_id": task_id, "view_url": url_for("ui.task_view", task_id=task_id)},
        url_for("api.task_status", task_id=task_id),
    )


@route
def submit_batch():
    options = parse_options(request.form)
    items, refused = probe_uploads(request.files.getlist("files"))
    if not items and not refused:
        raise InputError("send the images as multipart form fields named 'files'", code="no_file")
    if not items:
        first = refused[0]
        message = f"no file was accepted: {first['message']}"
        return error_json(first["code"], message, status_for(first["code"]), refused=refused)
    batch_id = submission.submit_batch(items, options, source="upload", settings=settings())
    view_url = url_for("ui.batch_view", batch_id=batch_id)
    return accepted(
        {"batch_id": batch_id, "total": len(items), "refused": refused, "view_url": view_url},
        url_for("api.batch_status", batch_id=batch_id),
    )


@route
def submit_folder():
    """Operator bulk path: a server-side folder under one of CVUNET_ALLOWED_ROOTS."""
    body = request.get_json(silent=True)
    folder = body.get("folder") if isinstance(body, dict) else None
    if not isinstance(folder, str) or not folder.strip() or "\x00" in folder:
        raise InputError('send JSON {"folder": "...", "options": {...}}', code="bad_request")
    options = parse_options(body.get("options"), form=False)
    cfg = settings()
    path = Path(folder) if Path(folder).is_absolute() else cfg.allowed_roots[0] / folder
    try:
        items = submission.folder_items(str(path), cfg)
    except (OSError, ValueError) as exc:  # too long a name, unencodable characters...
        raise InputError(f"folder {folder!r} cannot be read: {exc}", code="not_found") from None
    batch_id = submission.submit_batch(items, options, source=str(path), settings=cfg)
    return accepted(
        {"batch_id": batch_id, "total": len(items), "view_url": url_for("ui.batch_view", batch_id=batch_id)},
        url_for("api.batch_status", batch_id=batch_id),
    )


@route
def task_status(task_id: str):
    row = task_row(task_id)
    if row["state"] in FINAL_TASK_STATES:
        return poll_hint(task_json(row), finished=True)
    after = polling.retry_after(row, current_app.extensions["cvunet.pace"])
    return poll_hint(task_json(row), finished=False, after=str(after))


@route
def retry(task_id: str):
    from .recovery import retry_task

    row = task_row(task_id)
    if retry_task(row["id"]) != "requeued":
        raise InputError(f"task {task_id} is {row['state']}: only failed tasks can be retried", code="not_failed")
    return accepted({"task_id": str(row["id"]), "state": "pending"}, url_for("api.task_status", task_id=row["id"]))


@route
def batch_status(batch_id: str, offset: int, limit: int):
    payload = batch_json(*load_batch(batch_id, offset, limit), offset)
    return poll_hint(payload, payload["state"] == "done")


@route
def task_result(task_id: str, download: bool):
    return downloads.result(task_row(task_id), download)


@route
def task_alpha(task_id: str, download: bool):
    return downloads.matte(task_row(task_id), download)


@route
def task_input(task_id: str, download: bool):
    return downloads.original(task_row(task_id), download)


@route
def batch_zip(batch_id: str):
    batch, _, _ = load_batch(batch_id, 0, 0)
    return downloads.batch_zip(batch)


@route
def openapi():
    return jsonify(document())
