"""The browser pages: upload, a task's result, a batch's progress, and the history with Retry.

Every page acts as the signed-in user (g.actor, set by access.gate): a user sees only their own
work, an admin everything."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for

from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image import solid
from cvunet_matting.image.canvas_options import MAX_BLUR_PX
from cvunet_matting.image.encoding import DECONTAMINATE, EDGE_KEYS, MAX_EDGE_PX, REFINE, SOLIDIFY, OutputOptions
from cvunet_matting.image.imaging import SUPPORTED_FORMATS
from cvunet_matting.services import actions, listings, rerendering, submitting
from cvunet_matting.services.lookup import batch_for, task_for, visible_task
from cvunet_matting.states import TASK_STATES, TaskState
from cvunet_matting.webapp.api.docs import operations
from cvunet_matting.webapp.downloads import raw_matte_path_of
from cvunet_matting.webapp.errors import PAGE_NOT_FOUND
from cvunet_matting.webapp.inputs import CANVAS_FIELDS, parse_options, probe_uploads
from cvunet_matting.webapp.presenters import batch_json, listed_batch_json, task_json
from cvunet_matting.webapp.support import KEYED_BLUEPRINTS, KEYED_PREFIXES, csrf_token, csrf_valid, settings

from .signin import local_target

bp = Blueprint("ui", __name__)
BATCH_PAGE = 60
LISTING_PAGE = 25
EDGES = {"refine": REFINE, "decontaminate": DECONTAMINATE, "solidify": SOLIDIFY}  # the forms' defaults
MAX_PAGE = 100_000  # `page` beyond this is clamped: OFFSET work stays bounded
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@bp.before_app_request
def check_csrf():
    """Every HTML form POST carries the session's token; the JSON API authenticates on its own."""
    keyed = request.blueprint in KEYED_BLUEPRINTS or request.path.startswith(KEYED_PREFIXES)
    if request.method in UNSAFE_METHODS and not keyed:
        given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
        if not csrf_valid(given):
            abort(403, description="The form has expired or did not come from this site: reload the page and retry.")


# A task's state in the pages' words: the badges, and the upload card as it follows one image.
STATE_WORDS = {
    TaskState.PENDING: "queued",
    TaskState.STARTED: "working",
    TaskState.RETRY: "retrying",
    TaskState.SUCCESS: "done",
    TaskState.FAILURE: "failed",
}


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


def offset_of(page: int, per_page: int) -> int:
    return (page - 1) * per_page


def reason_to_flash(exc: InputError) -> str:
    """A refused action's reason, to flash on the page it came from; an id that names nothing the
    visitor may see is not flashed but answered as a missing page (errors.PAGE_NOT_FOUND)."""
    if exc.code in PAGE_NOT_FOUND:
        raise exc
    return exc.reason


@bp.get("/")
def index():
    cfg = settings()
    return render_template(
        "index.html",
        max_pixels=cfg.max_pixels,
        input_formats=sorted(SUPPORTED_FORMATS),
        max_edge_px=MAX_EDGE_PX,
        max_blur_px=MAX_BLUR_PX,
        edge_defaults=EDGES,
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


def form_options(form, files=None) -> OutputOptions:
    """The options of the page forms (macro output_fields): the colour counts only with its checkbox."""
    return parse_options(
        {
            "format": form.get("format"),
            "bg_color": form.get("bg_color") if form.get("fill") else None,
            "alpha_only": form.get("alpha_only", "false"),
            **{name: form.get(name) for name in EDGE_KEYS},
            **{name: form.get(name) for name in CANVAS_FIELDS},
        },
        files=files,
    )


@bp.post("/")
def upload_form():
    """The same upload without JavaScript: one file goes to its result page, several to a batch."""
    options = form_options(request.form, request.files)
    items, refused = probe_uploads(request.files.getlist("files"))
    flash_refusals(refused)
    if not items:
        if not refused:
            flash("Choose at least one image.", "error")
        return redirect(url_for("ui.index"))
    if len(items) == 1:
        task_id = submitting.submit_image(g.actor, items[0], options, settings())
        return redirect(url_for("ui.task_view", task_id=task_id))
    batch_id = submitting.submit_batch(g.actor, items, refused, options, settings())
    return redirect(url_for("ui.batch_view", batch_id=batch_id))


# What the "Adjust edges" preview (static/adjust.js) needs to draw solid subjects as solid.py does.
SOLID_PREVIEW = {
    "band_share": solid.BAND_SHARE,
    "min_band_px": solid.MIN_BAND_PX,
    "side": solid.SIDE,
    "half": solid.HALF,
}


@bp.get("/tasks/<task_id>")
def task_view(task_id: str):
    row = task_for(g.actor, task_id)
    # A re-render's source, linked only for a viewer who may see it (deleted since: named, not linked).
    source = visible_task(g.actor, row["rendered_from"]) if row["rendered_from"] else None
    # The options it ran with: the page says them (the JSON keeps to its documented shape).
    return render_template(
        "task.html",
        task=task_json(row),
        options=OutputOptions.from_dict(row["options"]),
        source=source,
        adjustable=raw_matte_path_of(row) is not None,  # a finished task whose raw matte is kept
        max_edge_px=MAX_EDGE_PX,
        solid_preview=SOLID_PREVIEW,
    )


@bp.post("/tasks/<task_id>/cancel")
def cancel_task(task_id: str):
    try:
        actions.cancel_task(g.actor, task_id)
        flash("Cancelled: it will not run.", "info")
    except InputError as exc:
        reason_to_flash(exc)
        flash("It had started already: it runs to its end.", "error")
    return redirect(url_for("ui.task_view", task_id=task_id))


@bp.post("/batches/<batch_id>/cancel")
def cancel_batch(batch_id: str):
    count = actions.cancel_batch(g.actor, batch_id)["cancelled"]
    flash(f"{count} waiting image{'s' if count != 1 else ''} cancelled; those already running finish.", "info")
    return redirect(url_for("ui.batch_view", batch_id=batch_id))


@bp.post("/tasks/<task_id>/delete")
def delete_task(task_id: str):
    try:
        actions.delete_task(g.actor, task_id, settings())
    except InputError as exc:
        flash(reason_to_flash(exc), "error")
        return redirect(url_for("ui.task_view", task_id=task_id))
    flash("Deleted: its original and its cut-out are gone.", "info")
    return redirect(url_for("ui.history"))


@bp.post("/batches/<batch_id>/delete")
def delete_batch(batch_id: str):
    try:
        count = actions.delete_batch(g.actor, batch_id, settings())["deleted"]
    except InputError as exc:
        flash(reason_to_flash(exc), "error")
        return redirect(url_for("ui.batch_view", batch_id=batch_id))
    flash(f"Batch deleted: {count} image{'s' if count != 1 else ''}, their cut-outs and the ZIP are gone.", "info")
    return redirect(url_for("ui.batches"))


@bp.post("/tasks/<task_id>/retry")
def retry(task_id: str):
    try:
        actions.retry(g.actor, task_id, force=request.form.get("force") == "1")
        flash("The task was sent back to the queue.", "info")
    except InputError as exc:
        reason = reason_to_flash(exc)
        flash(reason if exc.code != ErrorCode.NOT_FAILED else "Only failed tasks can be retried.", "error")
    return redirect(local_target(request.form.get("next"), url_for("ui.task_view", task_id=task_id)))


@bp.get("/batches/<batch_id>")
def batch_view(batch_id: str):
    page = page_number()
    order = "doubt" if request.args.get("sort") == "doubt" else "position"  # anything else: as submitted
    view = batch_for(g.actor, batch_id, offset_of(page, BATCH_PAGE), BATCH_PAGE, order)
    data = batch_json(view.batch, view.counts, view.items, offset_of(page, BATCH_PAGE))
    pages = listings.page_count(view.batch["total"], BATCH_PAGE)
    return render_template(
        "batch.html", batch=data, page=page, pages=pages, order=order, max_edge_px=MAX_EDGE_PX, edge_defaults=EDGES
    )


@bp.post("/batches/<batch_id>/render")
def render_batch(batch_id: str):
    """The batch page's "Render again": a new batch drawn from this one's mattes (no model), shown next."""
    try:
        new_id = rerendering.rerender_batch(g.actor, batch_id, form_options(request.form), settings())
    except InputError as exc:
        flash(reason_to_flash(exc), "error")
        return redirect(url_for("ui.batch_view", batch_id=batch_id))
    flash("Rendering every cut-out again with the new options, into this new batch; the old one stays.", "info")
    return redirect(url_for("ui.batch_view", batch_id=new_id))


@bp.get("/api-docs")
def api_docs():
    """The JSON API for people: open to all, as the OpenAPI document it is drawn from."""
    return render_template("api_docs.html", operations=operations())


@bp.get("/batches")
def batches():
    """The batches, newest first, with their progress: a batch of thousands is one row here."""
    page = page_number()
    listing = listings.batches(g.actor, offset_of(page, LISTING_PAGE), LISTING_PAGE)
    if page > listing.pages:
        return redirect(url_for("ui.batches", page=listing.pages))
    listed = [{**listed_batch_json(b.batch, b.counts), "owner": b.batch.get("owner_name")} for b in listing.rows]
    return render_template("batches.html", batches=listed, total=listing.total, page=page, pages=listing.pages)


@bp.get("/history")
def history():
    page = page_number()
    state = request.args.get("state") or None
    if state not in TASK_STATES:
        state = None
    listing = listings.tasks(g.actor, state, offset_of(page, LISTING_PAGE), LISTING_PAGE)
    if page > listing.pages:  # a page past the end (the list shrank, or a typed URL): its last page instead
        return redirect(url_for("ui.history", page=listing.pages, state=state))
    tasks = [{**task_json(r), "owner": r.get("owner_name")} for r in listing.rows]  # owners: admins' view
    return render_template(
        "history.html",
        tasks=tasks,
        total=listing.total,
        page=page,
        pages=listing.pages,
        state=state,
        states=TASK_STATES,
    )
