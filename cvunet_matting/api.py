"""The JSON API under /api/v1: submit images, batches and folders; poll status; download results."""

from __future__ import annotations

import hmac
import uuid
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from flask import Blueprint, current_app, jsonify, request, send_file, url_for

from . import db, polling, submission
from .db import reads
from .errors import InputError
from .imaging import OutputOptions, probe, sniff_extension
from .naming import safe_stem
from .storage import Storage
from .web import STATUS_BY_CODE, csrf_valid, error_json, has_browser_session, settings

bp = Blueprint("api", __name__, url_prefix="/api/v1")
ITEMS_LIMIT = 1000
# Retry-After on new work and unfinished batches: how often clients should poll. Tighter polling
# only takes CPU from the workers (32 clients at 10/s cost a 2-core host a fifth of its matting
# throughput). Unfinished tasks get a hint from the queue ahead of them (see polling.py).
POLL_AFTER_S = "1"
FINAL_STATES = {"success", "failure"}
INPUT_TYPES = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".gif": "image/gif",
}


def token_matches(given: str, tokens: tuple[str, ...]) -> bool:
    """Compare against every token in constant time (no early exit that would time the match)."""
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given.encode(), token.encode())
    return found


@bp.before_request
def authenticate():
    """With CVUNET_API_TOKENS set: a bearer token, or our own page's session (CSRF header for writes)."""
    tokens = settings().api_tokens
    if not tokens or request.endpoint == "api.openapi":
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given.strip() and token_matches(given.strip(), tokens):
        return None
    if csrf_valid(request.headers.get("X-CSRF-Token")):
        return None
    if request.method in {"GET", "HEAD"} and has_browser_session():
        return None  # <img> tags on our own pages cannot send headers
    response, status = error_json("unauthorized", "a valid 'Authorization: Bearer <token>' header is required", 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="cvunet-matting"'
    return response, status


def parse_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InputError(f"{value!r} is not a valid id (a UUID)", code="bad_id") from None


def parse_options(values, form: bool = True) -> OutputOptions:
    """Output options from form fields (strings) or a JSON object (alpha_only a boolean)."""
    values = {} if values is None else values
    if not hasattr(values, "get"):
        raise InputError("options must be an object", code="bad_option")
    fmt, color, alpha = values.get("format"), values.get("bg_color"), values.get("alpha_only", False)
    alpha_types = str if form else bool
    if not all(v is None or isinstance(v, str) for v in (fmt, color)) or not isinstance(alpha, alpha_types | bool):
        raise InputError("format and bg_color must be strings, alpha_only a boolean", code="bad_option")
    return OutputOptions.parse(fmt, color, alpha)


def query_int(name: str, default: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) > maximum:
        raise InputError(f"{name} must be an integer from 0 to {maximum}", code="bad_request")
    return int(raw)


def task_row(task_id: str) -> dict:
    with db.transaction() as cur:
        row = reads.get_task(cur, parse_id(task_id))
    if row is None:
        raise InputError(f"no task {task_id}", code="not_found")
    return row


def has_alpha(row: dict) -> bool:
    options = OutputOptions.from_dict(row["options"])
    return options.alpha_only or (options.bg_color is None and options.format in {"png", "webp"})


def iso(value) -> str | None:
    return value.isoformat() if value else None


def item_json(row: dict) -> dict:
    tid = str(row["id"])
    item = {
        "task_id": tid,
        "filename": row["filename"],
        "state": row["state"],
        "error": row["error"],
        "status_url": url_for("api.task_status", task_id=tid),
        "view_url": url_for("ui.task_view", task_id=tid),
        "input_url": url_for("api.task_input", task_id=tid),
    }
    if row["state"] == "success":
        item["result_url"] = url_for("api.task_result", task_id=tid)
        if has_alpha(row):
            item["alpha_url"] = url_for("api.task_alpha", task_id=tid)
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


def accepted(payload: dict, location: str):
    return jsonify({**payload, "status_url": location}), 202, {"Location": location, "Retry-After": POLL_AFTER_S}


def poll_hint(payload: dict, finished: bool, after: str = POLL_AFTER_S):
    return (jsonify(payload), 200) if finished else (jsonify(payload), 200, {"Retry-After": after})


def probe_uploads(files) -> tuple[list[submission.Item], list[dict]]:
    """Read every upload, refusing bad ones from their header alone; names are never used as paths."""
    items, refused = [], []
    for upload in files:
        data = upload.read()
        if not upload.filename and not data:
            continue  # the empty part a browser sends for an empty file picker
        name = upload.filename or "image"
        try:
            probe(data, settings().max_pixels)
            items.append(submission.Item(name, data))
        except InputError as exc:
            refused.append({"filename": name, "code": exc.code, "message": exc.reason})
    return items, refused


@bp.post("/images")
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


@bp.post("/batches")
def submit_batch():
    options = parse_options(request.form)
    items, refused = probe_uploads(request.files.getlist("files"))
    if not items and not refused:
        raise InputError("send the images as multipart form fields named 'files'", code="no_file")
    if not items:
        first = refused[0]
        status = STATUS_BY_CODE.get(first["code"], 400)
        return error_json(first["code"], f"no file was accepted: {first['message']}", status, refused=refused)
    batch_id = submission.submit_batch(items, options, source="upload", settings=settings())
    return accepted(
        {
            "batch_id": batch_id,
            "total": len(items),
            "refused": refused,
            "view_url": url_for("ui.batch_view", batch_id=batch_id),
        },
        url_for("api.batch_status", batch_id=batch_id),
    )


@bp.post("/batches/folder")
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


@bp.get("/tasks/<task_id>")
def task_status(task_id: str):
    row = task_row(task_id)
    if row["state"] in FINAL_STATES:
        return poll_hint(task_json(row), finished=True)
    after = polling.retry_after(row, current_app.extensions["cvunet.pace"])
    return poll_hint(task_json(row), finished=False, after=str(after))


@bp.post("/tasks/<task_id>/retry")
def retry(task_id: str):
    from .recovery import retry_task

    row = task_row(task_id)
    if retry_task(row["id"]) != "requeued":
        raise InputError(f"task {task_id} is {row['state']}: only failed tasks can be retried", code="not_failed")
    return accepted({"task_id": str(row["id"]), "state": "pending"}, url_for("api.task_status", task_id=row["id"]))


def batch_json(batch: dict, counts: dict, rows: list[dict], offset: int) -> dict:
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
        "error": batch.get("error"),  # e.g. the ZIP could not be written
        "view_url": url_for("ui.batch_view", batch_id=bid),
        "items_offset": offset,
        "items": [item_json(r) for r in rows],
    }
    if batch["state"] == "done" and batch["zip_path"]:
        payload["zip_url"] = url_for("api.batch_zip", batch_id=bid)
    return payload


def load_batch(batch_id: str, offset: int = 0, limit: int = ITEMS_LIMIT) -> tuple[dict, dict, list[dict]]:
    bid = parse_id(batch_id)
    with db.transaction() as cur:
        batch = reads.get_batch(cur, bid)
        if batch is None:
            raise InputError(f"no batch {batch_id}", code="not_found")
        return batch, reads.batch_counts(cur, bid), reads.batch_items(cur, bid, offset, limit)


@bp.get("/batches/<batch_id:batch_id>")
def batch_status(batch_id: str):
    offset, limit = query_int("offset", 0, 2**31 - 1), query_int("limit", ITEMS_LIMIT, ITEMS_LIMIT)
    payload = batch_json(*load_batch(batch_id, offset, limit), offset)
    return poll_hint(payload, payload["state"] == "done")


def stored(relative: str) -> Path:
    """A stored file, only ever reached through Storage.resolve (which refuses escapes)."""
    path = Storage(settings().data_dir).resolve(relative)
    if not path.is_file():
        raise InputError("the file is no longer in storage", code="not_found")
    return path


def not_ready(what: str, row: dict):
    code = "failed" if row["state"] == "failure" else "not_ready"
    message = f"the task failed: {row['error']}" if code == "failed" else f"the {what} is not ready yet"
    return error_json(code, message, 404, state=row["state"])


def download(path: Path | BytesIO, name: str, mimetype: str):
    attachment = request.args.get("download") in {"1", "true", "yes"}
    return send_file(path, mimetype=mimetype, as_attachment=attachment, download_name=name)


@bp.get("/tasks/<task_id>/result")
def task_result(task_id: str):
    row = task_row(task_id)
    if row["state"] != "success":
        return not_ready("result", row)
    path = stored(row["output_path"])
    return download(path, path.name, OutputOptions.from_dict(row["options"]).mimetype)


@bp.get("/tasks/<task_id>/alpha")
def task_alpha(task_id: str):
    """The alpha matte as a grey PNG, taken from the stored cut-out (flattened outputs have none)."""
    row = task_row(task_id)
    if row["state"] != "success":
        return not_ready("alpha matte", row)
    if not has_alpha(row):
        raise InputError("this result was flattened on a colour: it has no alpha channel", code="not_found")
    path = stored(row["output_path"])
    name = f"{safe_stem(path.name)}-alpha.png"
    if OutputOptions.from_dict(row["options"]).alpha_only:
        return download(path, name, "image/png")
    pixels = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] != 4:
        raise InputError("the stored result has no alpha channel", code="not_found")
    _, buffer = cv2.imencode(".png", pixels[..., 3])  # an 8-bit grey PNG always encodes
    return download(BytesIO(buffer.tobytes()), name, "image/png")


@bp.get("/tasks/<task_id>/input")
def task_input(task_id: str):
    row = task_row(task_id)
    storage = Storage(settings().data_dir)
    path = stored(storage.relative(storage.input_path(row["input_key"])))
    with path.open("rb") as fh:
        extension = sniff_extension(fh.read(64)) or ".bin"
    mimetype = INPUT_TYPES.get(extension, "application/octet-stream")
    return download(path, f"{safe_stem(row['filename'])}{extension}", mimetype)


@bp.get("/batches/<batch_id:batch_id>/zip")
def batch_zip(batch_id: str):
    batch, _, _ = load_batch(batch_id, limit=0)
    if batch["state"] != "done":
        return error_json("not_ready", "the batch is not finished yet", 404, state=batch["state"])
    if not batch["zip_path"]:
        return error_json("no_zip", f"the batch has no ZIP: {batch.get('error') or 'none was written'}", 404)
    path = stored(batch["zip_path"])
    return send_file(path, mimetype="application/zip", as_attachment=True, download_name=path.name)


@bp.get("/openapi.json")
def openapi():
    from .openapi import document

    return jsonify(document())
