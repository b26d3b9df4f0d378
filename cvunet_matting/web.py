"""The Flask app factory: settings, secret key, error handlers, and the one place that knows every blueprint.

The web process only stores uploads, records rows and enqueues tasks: it never loads the model.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from flask import Flask
from werkzeug.routing import BaseConverter

from .accounts.users import DEFAULT_QUOTAS
from .config import Settings, get_settings, load_settings
from .malloc import tune_for_large_buffers
from .services.rerendering import Renders
from .webapp import access, health, metrics
from .webapp.alpha_matte import Derivations
from .webapp.api import views as api_views
from .webapp.dropin import rembg, removebg
from .webapp.errors import register_errors
from .webapp.pages import json_routes, signin
from .webapp.pages import views as page_views
from .webapp.polling import PaceCache
from .webapp.support import security_headers
from .webapp.unread_bodies import ReadUnreadBodies
from .webapp.waiting import Hub

FORM_FIELDS_ROOM = 64  # parts beyond the files: csrf_token and the options (about a dozen today)


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


def create_app(test_config: dict | None = None) -> Flask:
    """Build the web app; `test_config` overrides Flask config keys and CVUNET_* settings."""
    tune_for_large_buffers()  # uploads are image-sized buffers too
    test_config = dict(test_config or {})
    cfg = app_settings(test_config)
    app = Flask(__name__, template_folder="webapp/templates", static_folder="webapp/static")
    app.config.update(
        MAX_CONTENT_LENGTH=cfg.max_upload_mb * 1024 * 1024,
        # A batch is one part per file, plus the form's option fields: the default largest batch fits.
        MAX_FORM_PARTS=DEFAULT_QUOTAS["max_batch"] + FORM_FIELDS_ROOM,
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
    # Requests held by ?wait= (and event streams), woken by Redis pub/sub: at most CVUNET_WAIT_SLOTS
    # per process, fewer than its gunicorn threads so that ordinary requests always find one.
    app.extensions["cvunet.waits"] = Hub(cfg.redis_url, cfg.wait_slots)
    # Alpha mattes derived from stored cut-outs on their first request: at most CVUNET_ALPHA_DERIVATIONS
    # at once per process (each decodes a whole RGBA result: ~375 MB at its peak for 7000x7000).
    app.extensions["cvunet.alpha"] = Derivations(cfg.alpha_derivations)
    app.extensions["cvunet.renders"] = Renders(cfg.renders)
    app.url_map.converters["batch_id"] = BatchIdConverter
    register_errors(app)
    app.after_request(security_headers)
    access.init_app(app, cfg)  # before the blueprints: it gates them
    metrics.init_app(app)
    for blueprint in (api_views.bp, removebg.bp, rembg.bp, page_views.bp, json_routes.bp, signin.bp, health.bp):
        app.register_blueprint(blueprint)
    # Outermost: whatever answered early (a 401, a 400, a 429), the body is read before the answer goes.
    app.wsgi_app = ReadUnreadBodies(app.wsgi_app, app.config["MAX_CONTENT_LENGTH"])  # type: ignore[method-assign]
    return app
