"""remove.bg's `POST /v1.0/removebg` and `GET /v1.0/account`, for clients written for them: change the base
URL, use one of our API keys as `X-Api-Key`, keep the rest (fields: removebg_fields.py).

The answer is remove.bg's: the image's bytes (or `{"data": {"result_b64"}}` for `Accept: application/json`)
with X-Width, X-Height, X-Type and X-Credits-Charged (1: the task counted against the key's quotas);
refusals as `{"errors": [{"title", "code"}]}` with its statuses (403 for a missing or wrong key, 400 for
bad input, 429 with Retry-After over a quota). Behind it, an ordinary task of the key's user
(running.py); X-Task-Id names it (GET /api/v1/tasks/{id} with the same key).
"""

from __future__ import annotations

import base64
import binascii
import logging

from flask import Blueprint, current_app, g, jsonify, make_response, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from cvunet_matting.accounts import quotas
from cvunet_matting.accounts import users as accounts
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image.imaging import probe
from cvunet_matting.pipeline.submission import Item
from cvunet_matting.states import FailureCode
from cvunet_matting.webapp.api.auth import key_actor
from cvunet_matting.webapp.errors import STORAGE_ERRNOS, UNAVAILABLE, status_for
from cvunet_matting.webapp.inputs import check_filename, parse_options
from cvunet_matting.webapp.remote_image import UrlPolicy, fetch_image
from cvunet_matting.webapp.support import settings

from . import zipped
from .openapi import REMOVEBG_FIELDS, document
from .removebg_fields import RemoveBgError, Translated, bad, check_names, image_source, translate
from .running import Failed, Finished, StillRunning, run_image

log = logging.getLogger(__name__)
bp = Blueprint("removebg", __name__)
FILE_FIELDS = {"image_file", "bg_image_file"}
ANSWER_TYPES = {"png": "image/png", "jpg": "image/jpeg", "zip": "application/zip"}
STILL_RUNNING_RETRY_S = 5
# remove.bg's account answer has numbers only: a key without a daily quota reports this many images left
# (the largest integer every JSON client reads exactly), and says so in quotas.max_per_day (null).
UNLIMITED = 2**31 - 1
# Our refusals in remove.bg's words: status, code, title (the detail is our own message).
INPUT_CODES: dict[str, tuple[int, str, str]] = {
    ErrorCode.NO_FILE: (400, "missing_source", "No image given"),
    ErrorCode.EMPTY: (400, "invalid_file_type", "Invalid file type"),
    ErrorCode.SVG: (400, "invalid_file_type", "Invalid file type"),
    ErrorCode.NOT_AN_IMAGE: (400, "invalid_file_type", "Invalid file type"),
    ErrorCode.UNSUPPORTED_FORMAT: (400, "invalid_file_type", "Invalid file type"),
    ErrorCode.TRUNCATED: (400, "failed_to_read_image", "There was an error reading the image."),
    ErrorCode.TOO_MANY_PIXELS: (400, "resolution_too_high", "Image resolution too high"),
    ErrorCode.TOO_LARGE: (400, "file_too_large", "File too large"),
    ErrorCode.BAD_FILENAME: (400, "invalid_filename", "Invalid file name"),
    ErrorCode.BAD_OPTION: (400, "invalid_parameter", "Invalid parameter given"),
    ErrorCode.BAD_URL: (400, "invalid_image_url", "Invalid image_url"),
    ErrorCode.URL_FAILED: (400, "failed_image_download", "Failed to download image from given image_url"),
    ErrorCode.QUOTA_EXCEEDED: (429, "rate_limit_exceeded", "Rate limit exceeded"),
    ErrorCode.TOO_MANY_WAITS: (429, "rate_limit_exceeded", "Rate limit exceeded"),
    ErrorCode.STORAGE_UNAVAILABLE: (503, "service_unavailable", "Service unavailable"),
}


@bp.before_request
def authenticate():
    """X-Api-Key: one of our API keys (a user's, or a legacy token); missing or wrong: 403, as remove.bg."""
    if request.endpoint == "removebg.openapi":
        return None  # as open as /api/v1/openapi.json
    if current_app.extensions["cvunet.auth"].single_user:
        g.actor = accounts.OPERATOR
        return None
    given = request.headers.get("X-Api-Key", "").strip()
    actor = key_actor(given) if given else None
    if actor is None:
        title = "API Key invalid" if given else "Missing API Key"
        raise RemoveBgError(403, "auth_failed", title, "send one of your API keys as the X-Api-Key header")
    g.actor = actor
    return None


def request_values() -> tuple[dict[str, str], dict]:
    """The text fields (form or JSON, remove.bg takes both) and the file parts, names checked."""
    if request.mimetype == "application/json":
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise bad("invalid_json", "Invalid JSON body", "send a JSON object of parameters")
        values = {str(k): v if isinstance(v, str) else str(v).lower() for k, v in body.items() if v is not None}
        files: dict = {}
    else:
        values, files = request.form.to_dict(), request.files.to_dict()
    check_names(set(values) | set(files))
    check_choices(values)
    if set(files) - FILE_FIELDS:
        raise bad("unknown_parameter", f"Only {' and '.join(sorted(FILE_FIELDS))} may be files")
    return values, files


def check_choices(values: dict[str, str]) -> None:
    """A field with published choices takes one of them (an empty one too is refused: the published
    document, /v1.0/openapi.json, is what a client reads)."""
    for name, text in values.items():
        choices = REMOVEBG_FIELDS.get(name, {}).get("enum")
        if choices is not None and text not in choices:
            raise bad(f"invalid_{name}", f"Invalid {name} parameter given", f"use one of {', '.join(choices)}")


def source_image(values: dict[str, str], files: dict) -> Item:
    """The image from whichever one source was sent."""
    source = image_source(values, set(files))
    if source == "image_file":
        if "image_file" not in files:  # sent as a text field (a form without multipart, or JSON)
            raise bad(
                "invalid_image_file",
                "Invalid image_file parameter given",
                "image_file must be a file part of a multipart/form-data body: send text as image_file_b64",
            )
        upload = files["image_file"]
        return Item(check_filename(upload.filename), upload.read())
    if source == "image_file_b64":
        try:
            return Item("image", base64.b64decode("".join(values[source].split()), validate=True))
        except (binascii.Error, ValueError):
            raise bad("failed_to_read_image", "There was an error reading the image.", "not base64") from None
    return Item("image", fetch_image(values[source], UrlPolicy.of(settings())))


def checked_options(wanted: Translated, files: dict):
    """Our options from the translated fields (remove.bg's bg_image_file is our bg_image); a bad value
    names its remove.bg field."""
    background = MultiDict({"bg_image": files["bg_image_file"]} if "bg_image_file" in files else {})
    try:
        return parse_options(MultiDict(wanted.fields), files=background)
    except InputError as exc:
        name = next((n for n in [*wanted.fields, "bg_image"] if n in exc.reason), "parameter")
        name = "bg_image_file" if name == "bg_image" else name  # remove.bg's name for it
        raise bad(f"invalid_{name}", f"Invalid {name} parameter given", exc.reason) from None


@bp.post("/v1.0/removebg")
def removebg():
    values, files = request_values()
    item = source_image(values, files)
    info = probe(item.data, settings().max_pixels)
    wanted = translate(values, set(files), info.width, info.height)
    try:
        finished = run_image(g.actor, item, checked_options(wanted, files))
    except Failed as failed:
        raise failure(failed) from None
    except StillRunning as running:
        error = RemoveBgError(
            503,
            "still_processing",
            "The image is still being processed",
            retry_after=STILL_RUNNING_RETRY_S,
            detail=f"its task {running.task_id} goes on: GET /api/v1/tasks/{running.task_id}, or ask again",
        )
        raise error from None
    return answer(finished, wanted)


@bp.get("/v1.0/account")
def account():
    """remove.bg's credit balance, in our terms: each image costs one credit, and what a key has left is
    the images its user may still send today (UTC). Our own quotas and their use ride along, as
    /api/v1/limits gives them."""
    who = g.actor
    usage = quotas.usage(who)
    left = UNLIMITED if who.max_per_day is None else max(0, who.max_per_day - usage["today"])
    attributes = {
        "credits": {"total": left, "subscription": left, "payg": 0, "enterprise": 0},
        "api": {"free_calls": left, "sizes": "all"},
        "quotas": {"max_per_day": who.max_per_day, "max_in_flight": who.max_in_flight, "max_batch": who.max_batch},
        "usage": usage,
    }
    return jsonify({"data": {"attributes": attributes}})


@bp.get("/v1.0/openapi.json")
def openapi():
    """The drop-in endpoints' OpenAPI document (remove.bg's and rembg's), for anyone."""
    return jsonify(document())


def failure(failed: Failed) -> RemoveBgError:
    if failed.code == FailureCode.REFUSED:
        return bad("failed_to_read_image", "There was an error reading the image.", failed.reason)
    if failed.code == FailureCode.EMPTY_SUBJECT:
        return bad("unknown_foreground", "Could not identify foreground in image.", failed.reason)
    return RemoveBgError(500, "processing_failed", "The image could not be processed", failed.reason)


def answer(finished: Finished, wanted: Translated):
    data, kind = finished.data, wanted.answer
    if kind == "zip":
        data = zipped.color_and_alpha(finished.data, wanted.zip_bg_color)
    elif finished.options.alpha_only or finished.options.format == "png":
        kind = "png"
    headers = {
        "X-Width": str(finished.width),
        "X-Height": str(finished.height),
        "X-Type": wanted.foreground_type,
        "X-Credits-Charged": "1",  # the task counted against the key's quotas
        "X-Task-Id": finished.task_id,
    }
    if request.accept_mimetypes.best_match([ANSWER_TYPES[kind], "application/json"]) == "application/json":
        body = {"data": {"result_b64": base64.b64encode(data).decode("ascii")}}
        return jsonify(body), 200, headers
    response = make_response(data, 200, headers)
    response.mimetype = ANSWER_TYPES[kind]
    if kind == "zip":
        response.headers["Content-Disposition"] = 'attachment; filename="no-bg.zip"'
    return response


# ------------------------------------------------------------------ every refusal in remove.bg's shape


def refusal(error: RemoveBgError):
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else {}
    return jsonify(error.body()), error.status, headers


@bp.errorhandler(RemoveBgError)
def _removebg_error(exc: RemoveBgError):
    return refusal(exc)


@bp.errorhandler(InputError)
def _input_error(exc: InputError):
    status, code, title = INPUT_CODES.get(exc.code, (status_for(exc.code), str(exc.code), exc.reason))
    return refusal(RemoveBgError(status, code, title, exc.reason, exc.retry_after))


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    if exc.code == 413:  # remove.bg answers a file over its limit with 400 file_too_large
        detail = f"the request is larger than the {settings().max_upload_mb} MB limit"
        return refusal(bad("file_too_large", "File too large", detail))
    code = (exc.name or "error").lower().replace(" ", "_")
    return refusal(RemoveBgError(exc.code or 500, code, exc.name or "Error", exc.description or ""))


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    if isinstance(exc, UNAVAILABLE) or (isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS):
        log.warning("service unavailable on %s: %s", request.path, exc)
        title = "the queue, the database or the storage is unavailable; try again shortly"
        return refusal(RemoveBgError(503, "service_unavailable", title, retry_after=STILL_RUNNING_RETRY_S))
    log.exception("unhandled error on %s %s", request.method, request.path)
    return refusal(RemoveBgError(500, "internal_error", "Internal error", "the error was logged"))
