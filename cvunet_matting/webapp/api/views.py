"""The JSON API under /api/v1: submit images, batches and folders; poll status; download results.

Each view is served on the operation operations.py declares under its name (see spec.router).
Every request is authenticated by an API key (auth.py); the browser session never is.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.services import actions, rerendering, submitting
from cvunet_matting.webapp import replies
from cvunet_matting.webapp.inputs import (
    check_api_fields,
    check_json_fields,
    check_option_fields,
    one_upload,
    parse_options,
    probe_uploads,
)
from cvunet_matting.webapp.replies import actor, rerender
from cvunet_matting.webapp.support import settings

from .auth import authenticate
from .openapi import document
from .operations import OPERATIONS
from .spec import PREFIX, router

bp = Blueprint("api", __name__, url_prefix=PREFIX)
bp.before_request(authenticate)
route = router(bp, OPERATIONS)


@route
def submit_image(wait: float):
    check_api_fields(request.form, request.files, "file", one_file=True)
    item = one_upload(request.files)
    task_id = submitting.submit_image(actor(), item, parse_options(request.form, files=request.files), settings())
    return replies.image_accepted(task_id, wait)


@route
def submit_batch():
    check_api_fields(request.form, request.files, "files", one_file=False)
    options = parse_options(request.form, files=request.files)
    items, refused = probe_uploads(request.files.getlist("files"))
    batch_id = submitting.submit_batch(actor(), items, refused, options, settings())
    return replies.batch_accepted(batch_id, len(items), refused)


@route
def submit_folder():
    """Operator bulk path (admins only): a server-side folder under one of CVUNET_ALLOWED_ROOTS."""
    submitting.check_may_submit_folders(actor())  # before the body is read: refused whatever it holds
    body = request.get_json(silent=True)
    body = body if isinstance(body, dict) else {}
    folder = body.get("folder")
    if not isinstance(folder, str) or not folder.strip() or "\x00" in folder:
        raise InputError('send JSON {"folder": "...", "options": {...}}', code=ErrorCode.BAD_REQUEST)
    check_json_fields(body, body.get("options"))
    options = parse_options(body.get("options"), form=False)
    return replies.folder_accepted(submitting.submit_folder(actor(), folder, options, settings()))


@route
def list_batches(offset: int, limit: int):
    return replies.batch_listing(offset, limit)


@route
def list_tasks(state: str | None, offset: int, limit: int):
    return replies.task_listing(state, offset, limit)


@route
def task_status(task_id: str, wait: float):
    return replies.task_status(task_id, wait)


@route
def retry(task_id: str, force: bool):
    return replies.retried(actions.retry(actor(), task_id, force))


@route
def render_task(task_id: str):
    """A finished task's cut-out again with other options, from its kept raw matte (no model)."""
    check_option_fields(request.form, request.files, request.mimetype, request.content_length)
    options = parse_options(request.form, files=request.files)
    return replies.rendered(rerender(actor(), task_id, options, settings()))


@route
def render_batch(batch_id: str):
    """A finished batch's cut-outs again with other options, into a new batch (bookkeeping worker, no model)."""
    check_option_fields(request.form, request.files, request.mimetype, request.content_length)
    if "bg_image" in request.files:  # a batch renders from its stored files alone: refused, never ignored
        raise InputError(
            "a batch is rendered again without an uploaded background: leave bg_image out", code=ErrorCode.BAD_OPTION
        )
    options = parse_options(request.form)
    return replies.batch_rendered(rerendering.rerender_batch(actor(), batch_id, options, settings()))


@route
def cancel_task(task_id: str):
    return jsonify(actions.cancel_task(actor(), task_id))


@route
def cancel_batch(batch_id: str):
    return jsonify(actions.cancel_batch(actor(), batch_id))


@route
def delete_task(task_id: str):
    return jsonify(actions.delete_task(actor(), task_id, settings()))


@route
def delete_batch(batch_id: str):
    return jsonify(actions.delete_batch(actor(), batch_id, settings()))


@route
def batch_status(batch_id: str, offset: int, limit: int, wait: float, seen: int | None):
    return replies.batch_status(batch_id, offset, limit, wait, seen)


@route
def limits():
    return replies.limits(settings())


@route
def task_result(task_id: str, download: bool):
    return replies.task_file("result", task_id, download)


@route
def task_alpha(task_id: str, download: bool):
    return replies.task_file("alpha", task_id, download)


@route
def task_input(task_id: str, download: bool):
    return replies.task_file("input", task_id, download)


@route
def batch_zip(batch_id: str):
    return replies.batch_zip(batch_id)


@route
def openapi():
    return jsonify(document())
