"""The JSON API under /api/v1: submit images, batches and folders; poll status; download results.

Each view is served on the operation api_routes declares under its name (see api_spec.router).
Every request is authenticated by an API key (api_auth); the browser session never is.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, jsonify, request, url_for

from cvunet_matting.errors import InputError
from cvunet_matting.pipeline import submission
from cvunet_matting.webapp import intake
from cvunet_matting.webapp.inputs import check_json_fields, parse_options
from cvunet_matting.webapp.support import settings

from .auth import authenticate
from .openapi import document
from .operations import OPERATIONS
from .spec import PREFIX, router

bp = Blueprint("api", __name__, url_prefix=PREFIX)
bp.before_request(authenticate)
route = router(bp, OPERATIONS)
VIA = "api"


@route
def submit_image(wait: float):
    return intake.submit_image(VIA, wait)


@route
def submit_batch():
    return intake.submit_batch(VIA)


@route
def submit_folder():
    """Operator bulk path (admins only): a server-side folder under one of CVUNET_ALLOWED_ROOTS."""
    if not intake.actor().is_admin:
        raise InputError("only admins may submit server-side folders", code="forbidden")
    body = request.get_json(silent=True)
    folder = body.get("folder") if isinstance(body, dict) else None
    if not isinstance(folder, str) or not folder.strip() or "\x00" in folder:
        raise InputError('send JSON {"folder": "...", "options": {...}}', code="bad_request")
    check_json_fields(body, body.get("options"))
    options = parse_options(body.get("options"), form=False)
    cfg = settings()
    path = Path(folder) if Path(folder).is_absolute() else cfg.allowed_roots[0] / folder
    try:  # the listing runs in a task: the batch's status gives its total once it is known
        batch_id = submission.submit_folder(str(path), options, settings=cfg, owner=intake.actor())
    except (OSError, ValueError):  # too long a name, unencodable characters...
        raise InputError("the folder cannot be read", code="not_found") from None
    return intake.accepted(
        {
            "batch_id": batch_id,
            "state": "listing",
            "total": None,
            "view_url": url_for("ui.batch_view", batch_id=batch_id),
        },
        url_for("api.batch_status", batch_id=batch_id),
    )


@route
def list_batches(offset: int, limit: int):
    return intake.list_batches(VIA, offset, limit)


@route
def list_tasks(state: str | None, offset: int, limit: int):
    return intake.list_tasks(VIA, state, offset, limit)


@route
def task_status(task_id: str, wait: float):
    return intake.task_status(VIA, task_id, wait)


@route
def retry(task_id: str, force: bool):
    return intake.retry(VIA, task_id, force)


@route
def cancel_task(task_id: str):
    return jsonify(intake.cancel_task(task_id))


@route
def cancel_batch(batch_id: str):
    return jsonify(intake.cancel_batch(batch_id))


@route
def delete_task(task_id: str):
    return jsonify(intake.delete_task(task_id))


@route
def delete_batch(batch_id: str):
    return jsonify(intake.delete_batch(batch_id))


@route
def batch_status(batch_id: str, offset: int, limit: int, wait: float):
    return intake.batch_status(VIA, batch_id, offset, limit, wait)


@route
def task_result(task_id: str, download: bool):
    return intake.task_file("result", task_id, download)


@route
def task_alpha(task_id: str, download: bool):
    return intake.task_file("alpha", task_id, download)


@route
def task_input(task_id: str, download: bool):
    return intake.task_file("input", task_id, download)


@route
def batch_zip(batch_id: str):
    return intake.batch_zip(batch_id)


@route
def openapi():
    return jsonify(document())
