"""Errors over HTTP: which status each error code gets, and the handlers (JSON under /api, pages elsewhere).

The status table is the one fact both the handlers and the OpenAPI document read: a code listed
under a status is sent with it, and the description is what the document publishes.
"""

from __future__ import annotations

import errno
import logging
from urllib.parse import urlsplit

import kombu.exceptions
import psycopg2
import redis
from flask import Flask, abort, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from cvunet_matting.errors import ErrorCode, InputError

from .support import settings

log = logging.getLogger(__name__)

# Status -> (what the OpenAPI document says of it, the InputError codes sent with it).
# Any code not listed is a plain 400.
ERROR_STATUSES = {
    400: ("Bad input: the `code` says what (bad_id, bad_option, no_file, empty, unknown_field...)", ()),
    401: ("No valid API key was sent (`Authorization: Bearer <key>`)", (ErrorCode.UNAUTHORIZED,)),
    403: (
        "Admins only (code `forbidden`), or the folder lies outside the allowed roots (`forbidden_path`); in"
        " single-user mode, a Host it does not answer to (`unknown_host`) or a change asked by another site's"
        " page (`cross_site`)",
        (ErrorCode.FORBIDDEN, ErrorCode.FORBIDDEN_PATH, ErrorCode.UNKNOWN_HOST, ErrorCode.CROSS_SITE),
    ),
    404: (
        "Unknown id, or the file is not ready (code `not_ready`) or the task failed (code `failed`)",
        (ErrorCode.NOT_FOUND, ErrorCode.NOT_READY, ErrorCode.FAILED, ErrorCode.NO_ZIP),
    ),
    409: (
        "Only failed, unexpired tasks can be retried (`expired_task`), an input that crashed the worker only by"
        " an admin (`poison_input`), and an input refused for what it is only with force=1 (`refused_input`);"
        " only a task no worker has started can be cancelled (`not_pending`); only finished work can be deleted"
        " (`not_finished`), and an image of a batch only with its batch (`in_batch`); only a"
        " successful task can be re-rendered (`not_done`)",
        (
            ErrorCode.NOT_FAILED,
            ErrorCode.POISON_INPUT,
            ErrorCode.EXPIRED_TASK,
            ErrorCode.REFUSED_INPUT,
            ErrorCode.NOT_PENDING,
            ErrorCode.NOT_FINISHED,
            ErrorCode.IN_BATCH,
            ErrorCode.NOT_DONE,
        ),
    ),
    410: (
        "Retention removed this file (code `expired`); the task's or batch's record is kept; a re-render"
        " finds no raw matte (`no_matte`: deleted, or the result was made before mattes were kept)",
        (ErrorCode.EXPIRED, ErrorCode.NO_MATTE),
    ),
    413: ("The upload is over the size limit, or has too many parts (code `too_large`)", (ErrorCode.TOO_LARGE,)),
    415: (
        "Not a supported raster image (codes `svg`, `not_an_image`, `unsupported_format`)",
        (ErrorCode.SVG, ErrorCode.NOT_AN_IMAGE, ErrorCode.UNSUPPORTED_FORMAT),
    ),
    422: (
        "More files at once (refused ones included) than a quota of this account ever allows (code"
        " `batch_too_large`): split them; a re-render asked to crop to a subject its matte does not hold"
        " (`empty_subject`)",
        (ErrorCode.BATCH_TOO_LARGE, ErrorCode.EMPTY_SUBJECT),
    ),
    429: (
        "Over a quota of this account (code `quota_exceeded`), or it holds as many `?wait=` requests and event"
        " streams (`too_many_waits`) or downloads (`too_many_downloads`) as it may at once: see Retry-After",
        (ErrorCode.QUOTA_EXCEEDED, ErrorCode.TOO_MANY_WAITS, ErrorCode.TOO_MANY_DOWNLOADS),
    ),
    503: (
        "Redis or PostgreSQL cannot be reached, or the data volume is full or read-only (code"
        " `storage_unavailable`, with Retry-After), or (an alpha matte's first download) this web process is"
        " preparing as many mattes (or re-renders) as it may at once (code `busy`): see Retry-After",
        (ErrorCode.STORAGE_UNAVAILABLE, ErrorCode.BUSY),
    ),
}
_STATUS_BY_CODE: dict[str, int] = {code: status for status, (_, codes) in ERROR_STATUSES.items() for code in codes}
UNAVAILABLE = (kombu.exceptions.OperationalError, redis.RedisError, psycopg2.OperationalError, psycopg2.InterfaceError)


def status_for(code: ErrorCode) -> int:
    """The HTTP status an InputError code is sent with."""
    return _STATUS_BY_CODE.get(code, 400)


def error_json(code: str, message: str, status: int, **extra):
    return jsonify({"error": {"code": code, "message": message, **extra}}), status


# Paths whose errors are JSON: the API, the pages' own routes, the remove.bg drop-in (/v1.0/removebg).
JSON_PREFIXES = ("/api/", "/page/", "/v1.0/")


def wants_json() -> bool:
    return request.path.startswith(JSON_PREFIXES)


def _code(title: str | None) -> str:
    """A stable code from a status title: "Method Not Allowed" -> method_not_allowed."""
    return (title or "error").lower().replace(" ", "_").replace("'", "")


def _error_page(status: int, title: str, message: str):
    if wants_json():
        return error_json(_code(title), message, status)
    return render_template("error.html", status=status, title=title, message=message), status


# On a page, an id that names nothing the visitor may see, or is no id at all, is a page that does not exist.
PAGE_NOT_FOUND = {ErrorCode.NOT_FOUND, ErrorCode.BAD_ID}


def _input_error(exc: InputError):
    """A refusal, in the one place that gives it its HTTP status (status_for), as JSON or as a page."""
    status = status_for(exc.code)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    if wants_json():
        response, status = error_json(exc.code, exc.reason, status, **exc.details)
        return response, status, headers
    if exc.code in PAGE_NOT_FOUND:
        return render_template("error.html", status=404, title="Not found", message=f"{exc.reason}."), 404
    return render_template("error.html", status=status, title="Refused", message=exc.reason), status, headers


def _too_large(json: bool):
    length, limit = request.content_length, request.max_content_length
    if length is not None and (limit is None or length <= limit):
        # Not the size: the multipart parser refused more parts than MAX_FORM_PARTS (the audit's request of
        # 10,000 empty files was 1.2 MB), or a field it holds in memory over MAX_FORM_MEMORY_SIZE.
        message = (
            f"the form has more than {request.max_form_parts} parts (one per file or field), or a field over"
            f" {request.max_form_memory_size} bytes: send fewer files per request"
        )
    else:
        message = f"the upload is larger than the {settings().max_upload_mb} MB limit"
    return error_json(ErrorCode.TOO_LARGE, message, 413) if json else _error_page(413, "Too large", message)


def edge_refusal(status: int):
    """The body Traefik sends instead of its own plain-text 413 (its buffering middleware refuses an
    upload over the limit before the app sees it; the errors middleware asks this page, passing the
    original URL): the same answer the app gives, JSON under /api and /page."""
    if status != 413:
        abort(404)
    path = urlsplit(request.args.get("url", "")).path
    return _too_large(path.startswith(JSON_PREFIXES))


def _http_error(exc: HTTPException):
    if exc.code == 413:
        return _too_large(wants_json())
    response = exc.get_response()  # keeps headers such as Allow on a 405
    if not wants_json():
        response.set_data(render_template("error.html", status=exc.code, title=exc.name, message=exc.description))
        response.content_type = "text/html; charset=utf-8"
        return response
    response.set_data(jsonify({"error": {"code": _code(exc.name), "message": exc.description}}).get_data())
    response.content_type = "application/json"
    return response


def _unavailable(exc: Exception):
    log.warning("service unavailable on %s %s: %s", request.method, request.path, exc)
    return _error_page(503, "Unavailable", "the queue or the database cannot be reached; try again shortly")


# The data volume full or read-only: the service's state, not the request's fault, and it passes.
STORAGE_ERRNOS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "read-only"}
STORAGE_RETRY_S = 60


def _storage(exc: OSError):
    state = STORAGE_ERRNOS.get(exc.errno or 0)
    if state is None:
        return _unexpected(exc)
    log.warning("storage %s on %s %s: %s", state, request.method, request.path, exc)  # no traceback: ops know
    message = f"the service's storage is {state}: nothing was kept of this request; try again later"
    headers = {"Retry-After": str(STORAGE_RETRY_S)}
    if wants_json():
        response, status = error_json(ErrorCode.STORAGE_UNAVAILABLE, message, 503)
        return response, status, headers
    return render_template("error.html", status=503, title="Unavailable", message=message), 503, headers


def _unexpected(exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _error_page(500, "Internal error", "something went wrong on our side; the error was logged")


def register_errors(app: Flask) -> None:
    """Refusals, HTTP errors, an unreachable Redis or Postgres (503) and anything else (500, logged)."""
    app.register_error_handler(InputError, _input_error)
    app.register_error_handler(HTTPException, _http_error)
    for exc_class in UNAVAILABLE:
        app.register_error_handler(exc_class, _unavailable)
    app.register_error_handler(OSError, _storage)
    app.register_error_handler(Exception, _unexpected)
    app.add_url_rule("/errors/<int:status>", "edge_refusal", edge_refusal)
