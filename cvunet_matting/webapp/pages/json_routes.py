"""The pages' own JSON and file routes under /page: what app.js and <img> tags fetch with the
signed-in session (writes carry the CSRF token). The same work as the API (see intake), so the
browser session never needs to reach /api/v1, where only API keys count.
"""

from __future__ import annotations

from flask import Blueprint, request

from cvunet_matting.webapp import events, intake
from cvunet_matting.webapp.api.operations import DOWNLOAD, PAGE, WAIT

bp = Blueprint("page", __name__, url_prefix="/page")
VIA = "page"
_OFFSET, _LIMIT = PAGE
_DOWNLOAD = DOWNLOAD[0]


def download() -> bool:
    return _DOWNLOAD.parse(request.args.get("download"))


def wait() -> float:
    return WAIT.parse(request.args.get("wait"))


def seen() -> str | None:
    """What the page already shows: the answer comes once that changes (with ?wait=)."""
    return request.args.get("seen") or None


@bp.post("/images")
def submit_image():
    return intake.submit_image(VIA)


@bp.post("/batches")
def submit_batch():
    return intake.submit_batch(VIA)


@bp.get("/tasks/<task_id>")
def task_status(task_id: str):
    return intake.task_status(VIA, task_id, wait(), seen())


@bp.get("/tasks/<task_id>/events")
def task_events(task_id: str):
    return events.task_stream(VIA, task_id)


@bp.get("/tasks/<task_id>/result")
def task_result(task_id: str):
    return intake.task_file("result", task_id, download())


@bp.get("/tasks/<task_id>/alpha")
def task_alpha(task_id: str):
    return intake.task_file("alpha", task_id, download())


@bp.get("/tasks/<task_id>/input")
def task_input(task_id: str):
    return intake.task_file("input", task_id, download())


@bp.get("/batches/<batch_id>")
def batch_status(batch_id: str):
    offset = _OFFSET.parse(request.args.get("offset"))
    limit = _LIMIT.parse(request.args.get("limit"))
    shown = seen()
    if shown is not None and not shown.isdigit():
        shown = None
    return intake.batch_status(VIA, batch_id, offset, limit, wait(), None if shown is None else int(shown))


@bp.get("/batches/<batch_id>/events")
def batch_events(batch_id: str):
    return events.batch_stream(VIA, batch_id)


@bp.get("/batches/<batch_id>/zip")
def batch_zip(batch_id: str):
    return intake.batch_zip(batch_id)
