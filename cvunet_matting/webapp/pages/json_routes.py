"""The pages' own JSON and file routes under /page: what app.js and <img> tags fetch with the
signed-in session (writes carry the CSRF token). The same work as the API (services/, shaped by
replies), so the browser session never needs to reach /api/v1, where only API keys count.
"""

from __future__ import annotations

from flask import Blueprint, request

from cvunet_matting.services import submitting
from cvunet_matting.webapp import events, replies
from cvunet_matting.webapp.api.operations import DOWNLOAD, PAGE, WAIT
from cvunet_matting.webapp.inputs import one_upload, parse_options, probe_uploads
from cvunet_matting.webapp.replies import actor, rerender
from cvunet_matting.webapp.support import settings

bp = Blueprint("page", __name__, url_prefix="/page")
_OFFSET, _LIMIT = PAGE
_DOWNLOAD = DOWNLOAD[0]


def download() -> bool:
    return _DOWNLOAD.parse(request.args.get("download"))


def wait() -> float:
    return WAIT.parse(request.args.get("wait"))


def seen() -> str | None:
    """What the page already shows: the answer comes once that changes (with ?wait=)."""
    return request.args.get("seen") or None


# The pages send only what their own form holds: unlike the API, unknown fields are not looked for.
@bp.post("/images")
def submit_image():
    task_id = submitting.submit_image(
        actor(), one_upload(request.files), parse_options(request.form, files=request.files), settings()
    )
    return replies.image_accepted(task_id)


@bp.post("/batches")
def submit_batch():
    options = parse_options(request.form, files=request.files)
    items, refused = probe_uploads(request.files.getlist("files"))
    batch_id = submitting.submit_batch(actor(), items, refused, options, settings())
    return replies.batch_accepted(batch_id, len(items), refused)


@bp.get("/tasks/<task_id>")
def task_status(task_id: str):
    return replies.task_status(task_id, wait(), seen())


@bp.get("/tasks/<task_id>/events")
def task_events(task_id: str):
    return events.task_stream(task_id)


@bp.get("/tasks/<task_id>/result")
def task_result(task_id: str):
    return replies.task_file("result", task_id, download())


@bp.get("/tasks/<task_id>/alpha")
def task_alpha(task_id: str):
    return replies.task_file("alpha", task_id, download())


@bp.get("/tasks/<task_id>/input")
def task_input(task_id: str):
    return replies.task_file("input", task_id, download())


@bp.get("/tasks/<task_id>/raw-matte")
def task_raw_matte(task_id: str):
    """The model's matte before any edge step: the task page's "Adjust edges" preview draws from it."""
    return replies.task_file("raw_matte", task_id, download())


@bp.post("/tasks/<task_id>/render")
def render_task(task_id: str):
    """The task page's "Adjust edges" saved: the API's re-render (services/rerendering.py) with the
    session, answered with the new task's JSON and its /page links (201)."""
    return replies.rendered(rerender(actor(), task_id, parse_options(request.form), settings()))


@bp.get("/batches/<batch_id>")
def batch_status(batch_id: str):
    offset = _OFFSET.parse(request.args.get("offset"))
    limit = _LIMIT.parse(request.args.get("limit"))
    shown = seen()
    if shown is not None and not shown.isdigit():
        shown = None
    return replies.batch_status(batch_id, offset, limit, wait(), None if shown is None else int(shown))


@bp.get("/batches/<batch_id>/events")
def batch_events(batch_id: str):
    return events.batch_stream(batch_id)


@bp.get("/batches/<batch_id>/zip")
def batch_zip(batch_id: str):
    return replies.batch_zip(batch_id)
