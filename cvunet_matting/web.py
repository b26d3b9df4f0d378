"""The Flask app factory: settings, secret key, blueprints, and error pages (JSON under /api).

The web process only stores uploads, records rows and enqueues tasks: it never loads the model.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import tempfile
from pathlib import Path

import kombu.exceptions
import psycopg2
import redis
from flask import Flask, current_app, jsonify, render_template, request, session
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from .config import Settings, get_settings, load_settings
from .errors import InputError

log = logging.getLogger(__name__)

# InputError codes that mean something other than a plain 400 Bad Request.
STATUS_BY_CODE = {
    "too_large": 413,
    "forbidden_path": 403,
    "not_found": 404,
    "not_ready": 404,
    "svg": 415,
    "not_an_image": 415,
    "unsupported_format": 415,
    "unauthorized": 401,
    "not_failed": 409,
}
CSRF_KEY = "csrf"
UNAVAILABLE = (kombu.exceptions.OperationalError, redis.RedisError, psycopg2.OperationalError, psycopg2.InterfaceError)


class BatchIdConverter(BaseConverter):
    """Any segment but `folder`, so GET /api/v1/batches/folder is a 405, not a malformed batch id."""

    regex = r"(?!folder$)[^/]+"


def shared_secret(data_dir: Path) -> str:
    """The key in `data_dir/secret_key`, created once (0600) so every web instance signs alike."""
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".secret_key.")  # mkstemp makes it 0600
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)  # atomic create-if-absent: the first instance's key wins
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


def app_settings(test_config: dict) -> Settings:
    """get_settings(), or with CVUNET_* overrides from `test_config` laid over the environment."""
    overrides = {k: str(v) for k, v in test_config.items() if k.startswith("CVUNET_")}
    return load_settings({**os.environ, **overrides}) if overrides else get_settings()


def settings() -> Settings:
    """The settings of the app serving the current request."""
    return current_app.extensions["cvunet.settings"]


def csrf_token() -> str:
    """This browser session's CSRF token, made on first use."""
    if CSRF_KEY not in session:
        session[CSRF_KEY] = secrets.token_urlsafe(32)
    return session[CSRF_KEY]


def csrf_valid(given: str | None) -> bool:
    expected = session.get(CSRF_KEY)
    return bool(given and expected) and hmac.compare_digest(given.encode(), expected.encode())


def has_browser_session() -> bool:
    """A session that a page of ours started (it holds a CSRF token)."""
    return CSRF_KEY in session


def error_json(code: str, message: str, status: int, **extra):
    return jsonify({"error": {"code": code, "message": message, **extra}}), status


def wants_json() -> bool:
    return request.path.startswith("/api/")


def _error_page(status: int, title: str, message: str):
    if wants_json():
        return error_json(title.lower().replace(" ", "_").replace("'", ""), message, status)
    return render_template("error.html", status=status, title=title, message=message), status


def _too_large_message() -> str:
    return f"the upload is larger than the {settings().max_upload_mb} MB limit"


def register_errors(app: Flask) -> None:
    @app.errorhandler(InputError)
    def input_error(exc: InputError):
        status = STATUS_BY_CODE.get(exc.code, 400)
        if wants_json():
            return error_json(exc.code, exc.reason, status)
        return render_template("error.html", status=status, title="Refused", message=exc.reason), status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            if wants_json():
                return error_json("too_large", _too_large_message(), 413)
            return _error_page(413, "Too large", _too_large_message())
        response = exc.get_response()  # keeps headers such as Allow on a 405
        if not wants_json():
            body = render_template("error.html", status=exc.code, title=exc.name, message=exc.description)
            response.set_data(body)
            response.content_type = "text/html; charset=utf-8"
            return response
        code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
        response.set_data(jsonify({"error": {"code": code, "message": exc.description}}).get_data())
        response.content_type = "application/json"
        return response

    def unavailable(exc: Exception):
        log.warning("service unavailable on %s %s: %s", request.method, request.path, exc)
        return _error_page(503, "Unavailable", "the queue or the database cannot be reached; try again shortly")

    for exc_class in UNAVAILABLE:
        app.register_error_handler(exc_class, unavailable)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_page(500, "Internal error", "something went wrong on our side; the error was logged")


def security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    )
    return response


def create_app(test_config: dict | None = None) -> Flask:
    """Build the web app; `test_config` overrides Flask config keys and CVUNET_* settings."""
    from . import api, health, metrics, ui
    from .malloc import tune_for_large_buffers
    from .polling import PaceCache

    tune_for_large_buffers()  # uploads are image-sized buffers too
    test_config = dict(test_config or {})
    cfg = app_settings(test_config)
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=cfg.max_upload_mb * 1024 * 1024,
        MAX_FORM_PARTS=10_000,  # a batch is one part per file
        SECRET_KEY=cfg.secret_key or shared_secret(cfg.data_dir),
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        READY_CACHE_SECONDS=5.0,
    )
    # Flask's own knobs from the environment, e.g. CVUNET_FLASK_SESSION_COOKIE_SECURE=true behind TLS.
    app.config.from_prefixed_env("CVUNET_FLASK")
    app.config.update({k: v for k, v in test_config.items() if not k.startswith("CVUNET_")})
    app.extensions["cvunet.settings"] = cfg
    app.extensions["cvunet.pace"] = PaceCache()  # one per process: the pace query runs every few seconds
    app.url_map.converters["batch_id"] = BatchIdConverter
    register_errors(app)
    app.after_request(security_headers)
    metrics.init_app(app)
    for blueprint in (api.bp, ui.bp, health.bp):
        app.register_blueprint(blueprint)
    return app
