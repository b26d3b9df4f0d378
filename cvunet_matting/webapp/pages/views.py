"""The browser pages: upload, a task's result, a batch's progress, and the history with Retry.

Every page acts as the signed-in user (g.actor, set by access.gate): a user sees only their own
work, an admin everything."""

from __future__ import annotations

import math

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for

from cvunet_matting import db
from cvunet_matting.db import reads
from cvunet_matting.errors import InputError
from cvunet_matting.image.encoding import DECONTAMINATE, EDGE_KEYS, MAX_EDGE_PX, REFINE, OutputOptions
from cvunet_matting.image.imaging import SUPPORTED_FORMATS
from cvunet_matting.pipeline import submission
from cvunet_matting.states import TASK_STATES
from cvunet_matting.webapp.inputs import load_batch, parse_id, parse_options, probe_uploads, task_row
from cvunet_matting.webapp.presenters import batch_json, listed_batch_json, task_json
from cvunet_matting.webapp.support import csrf_token, csrf_valid, settings

from .signin import local_target

bp = Blueprint("ui", __name__)
BATCH_PAGE = 60
MAX_PAGE = 100_000  # `page` beyond this is clamped: OFFSET work stays bounded
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@bp.before_app_request
def check_csrf():
    """Every HTML form POST carries the session's token; the JSON API authenticates on its own."""
    if request.method in UNSAFE_METHODS and not request.path.startswith("/api/"):
        given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
        if not csrf_valid(given):
            abort(403, description="The form has expired or did not come from this site: reload the page and retry.")


# A task's state in the pages' words: the badges, and the upload card as it follows one image.
STATE_WORDS = {"pending": "queued", "started": "working", "retry": "retrying", "success": "done", "failure": "failed"}


@bp.app_context_processor
def template_globals():
    return {
        "state_words": STATE_WORDS,
        "csrf_token": csrf_token,
        "max_upload_mb": settings().max_upload_mb,
        "actor": g.get("actor"),
        "single_user": current_app.extensions["cvunet.auth"].single_user,
    }


def page_number() -> int:
    return min(max(request.args.get("page", 1, type=int), 1), MAX_PAGE)


def uuid_or_404(value: str) -> str:
    try:
        return parse_id(value)
    except InputError:
        abort(404)


@bp.get("/")
def index():
    cfg = settings()
    return render_template(
        "index.html",
        max_pixels=cfg.max_pixels,
        input_formats=sorted(SUPPORTED_FORMATS),
        max_edge_px=MAX_EDGE_PX,
        edge_defaults={"refine": REFINE, "decontaminate": DECONTAMINATE},
    )


# Flashes live in the session cookie until shown: one per refused file, for a folder of them, made a
# cookie no browser keeps (about 4 KB), and the page a wall of lines.
FLASHED_REFUSALS = 5


def flash_refusals(refused: list[dict]) -> None:
    for item in refused[:FLASHED_REFUSALS]:
        flash(f"{item['filename']}: {item['message']}", "error")
    if len(refused) > FLASHED_REFUSALS:
        more = len(refused) - FLASHED_REFUSALS
        flash(f"… and {more} more file{'s' if more > 1 else ''} refused.", "error")


@bp.post("/")
def upload_form():
    """The same upload without JavaScript: one file goes to its result page, several to a batch."""
    fill = request.form.get("fill")
    options = parse_options(
        {
            "format": request.form.get("format"),
            "bg_color": request.form.get("bg_color") if fill else None,
            "alpha_only": request.form.get("alpha_only", "false"),
            **{name: request.form.get(name) for name in EDGE_KEYS},
        }
    )
    items, refused = probe_uploads(request.files.getlist("files"))
    flash_refusals(refused)
    if not items:
        if not refused:
            flash("Choose at least one image.", "error")
        return redirect(url_for("ui.index"))
    if len(items) == 1:
        task_id = submission.submit_image(items[0], options, settings=settings(), owner=g.actor)
        return redirect(url_for("ui.task_view", task_id=task_id))
    batch_id = submission.submit_batch(items, options, settings=settings(), owner=g.actor, refused=refused)
    return redirect(url_for("ui.batch_view", batch_id=batch_id))


@bp.get("/tasks/<task_id>")
def task_view(task_id: str):
    try:
        row = task_row(uuid_or_404(task_id), g.actor)
    except InputError:
        abort(404, description="No such task: it may have been deleted.")
    # The options it ran with: the page says them (the JSON keeps to its documented shape).
    return render_template("task.html", task=task_json(row, "page"), options=OutputOptions.from_dict(row["options"]))


@bp.post("/tasks/<task_id>/cancel")
def cancel_task(task_id: str):
    from cvunet_matting.webapp.intake import cancel_task as cancel_as_actor

    try:
        cancel_as_actor(uuid_or_404(task_id))
        flash("Cancelled: it will not run.", "info")
    except InputError as exc:
        if exc.code == "not_found":
            abort(404, description="No such task.")
        flash("It had started already: it runs to its end.", "error")
    return redirect(url_for("ui.task_view", task_id=task_id))


@bp.post("/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str):
    from cvunet_matting.webapp.intake import cancel_batch as cancel_as_actor

    try:
        count = cancel_as_actor(batch_id)["cancelled"]
    except InputError as exc:
        if exc.code in ("not_found", "bad_id"):
            abort(404, description="No such batch.")
        raise
    flash(f"{count} waiting image{'s' if count != 1 else ''} cancelled; those already running finish.", "info")
    return redirect(url_for("ui.batch_view", batch_id=batch_id))


@bp.post("/tasks/<task_id>/delete")
def delete_task(task_id: str):
    from cvunet_matting.webapp.intake import delete_task as delete_as_actor

    try:
        delete_as_actor(uuid_or_404(task_id))
    except InputError as exc:
        if exc.code == "not_found":
            abort(404, description="No such task.")
        flash(exc.reason, "error")
        return redirect(url_for("ui.task_view", task_id=task_id))
    flash("Deleted: its original and its cut-out are gone.", "info")
    return redirect(url_for("ui.history"))


@bp.post("/batches/<batch_id>/delete")
def delete_batch(batch_id: str):
    from cvunet_matting.webapp.intake import delete_batch as delete_as_actor

    try:
        count = delete_as_actor(uuid_or_404(batch_id))["deleted"]
    except InputError as exc:
        if exc.code == "not_found":
            abort(404, description="No such batch.")
        flash(exc.reason, "error")
        return redirect(url_for("ui.batch_view", batch_id=batch_id))
    flash(f"Batch deleted: {count} image{'s' if count != 1 else ''}, their cut-outs and the ZIP are gone.", "info")
    return redirect(url_for("ui.batches"))


@bp.post("/tasks/<task_id>/retry")
def retry(task_id: str):
    from cvunet_matting.webapp.intake import retry as retry_as_actor

    try:
        retry_as_actor("page", uuid_or_404(task_id), force=request.form.get("force") == "1")
        flash("The task was sent back to the queue.", "info")
    except InputError as exc:
        if exc.code == "not_found":
            abort(404, description="No such task.")
        flash(exc.reason if exc.code != "not_failed" else "Only failed tasks can be retried.", "error")
    return redirect(local_target(request.form.get("next"), url_for("ui.task_view", task_id=task_id)))


@bp.get("/batches/<batch_id>")
def batch_view(batch_id: str):
    page = page_number()
    try:
        batch, counts, rows = load_batch(uuid_or_404(batch_id), (page - 1) * BATCH_PAGE, BATCH_PAGE, g.actor)
    except InputError:
        abort(404, description="No such batch.")
    data = batch_json(batch, counts, rows, (page - 1) * BATCH_PAGE, "page")
    pages = max(math.ceil(batch["total"] / BATCH_PAGE), 1)
    return render_template("batch.html", batch=data, page=page, pages=pages)


@bp.get("/api-docs")
def api_docs():
    """The JSON API for people: open to all, as the OpenAPI document it is drawn from."""
    from cvunet_matting.webapp.api.docs import operations

    return render_template("api_docs.html", operations=operations())


@bp.get("/batches")
def batches():
    """The batches, newest first, with their progress: a batch of thousands is one row here."""
    page = page_number()
    owner = None if g.actor.is_admin else g.actor.id
    with db.transaction() as cur:
        rows, total = reads.batch_listing(cur, owner, (page - 1) * reads.PAGE_SIZE, reads.PAGE_SIZE)
        counts = reads.many_batch_counts(cur, [b["id"] for b in rows])
    pages = max(math.ceil(total / reads.PAGE_SIZE), 1)
    if page > pages:
        return redirect(url_for("ui.batches", page=pages))
    listed = [{**listed_batch_json(b, counts[b["id"]], "page"), "owner": b.get("owner_name")} for b in rows]
    return render_template("batches.html", batches=listed, total=total, page=page, pages=pages)


@bp.get("/history")
def history():
    page = page_number()
    state = request.args.get("state") or None
    if state not in TASK_STATES:
        state = None
    owner = None if g.actor.is_admin else g.actor.id  # an admin sees everyone's, with their names
    with db.transaction() as cur:
        rows, total = reads.task_listing(cur, owner, state, (page - 1) * reads.PAGE_SIZE, reads.PAGE_SIZE)
    pages = max(math.ceil(total / reads.PAGE_SIZE), 1)
    if page > pages:  # a page past the end (the list shrank, or a typed URL): its last page instead
        return redirect(url_for("ui.history", page=pages, state=state))
    tasks = [{**task_json(r, "page"), "owner": r.get("owner_name")} for r in rows]  # owners: admins' view
    return render_template(
        "history.html", tasks=tasks, total=total, page=page, pages=pages, state=state, states=TASK_STATES
    )
