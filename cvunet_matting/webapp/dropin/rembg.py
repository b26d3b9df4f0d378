"""rembg's server (`rembg s`), for clients written for it: `POST /api/remove` with the image as the
multipart field `file`, `GET /api/remove?url=` for an image by URL (only from the hosts the operator
allows: remote_image.py); the answer is the PNG's bytes, as rembg's.

Its parameters as its server reads them (rembg/commands/s_command.py): `model`, `a`, `af`, `ab`, `ae`,
`om`, `ppm` in the form (POST) or the query (GET); `bgc` and `extras` in the query for both. Mapped:
- `model`: rembg's general-purpose models (u2net, its default; u2netp, silueta, isnet-general-use) all
  run our model; the special ones (human or cloth segmentation, anime, sam, birefnet...) are refused;
- `a` (alpha matting) on: `af` (foreground threshold, 240) becomes our `opaque_threshold` and `ab`
  (background threshold, 10) our `alpha_threshold`; our edge refinement is always on. `ae` (the trimap's
  erosion) is accepted and ignored; so are `af`/`ab` with `a` off (checked 0-255 all the same, as rembg's
  server checks them);
- `om`: only the mask (our `alpha_only`); `ppm` (post-process the mask) is accepted and ignored: our
  solid-subject step does that job and is on by default;
- `bgc` `r,g,b[,a]`: flattened on that colour (an opaque one only); `extras` is refused when not empty.
Our own edge controls (alpha_threshold, erode, feather, refine, decontaminate, solidify...) are taken too.

One key of ours is needed, as for /api/v1 (`Authorization: Bearer KEY`): 401 without. Refusals are
FastAPI's shape, `{"detail": ...}`; a bad parameter 422 as rembg's server answers it.
"""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, make_response, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from cvunet_matting.accounts import users as accounts
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image.encoding import EDGE_KEYS
from cvunet_matting.image.rembg_models import GENERAL_MODELS
from cvunet_matting.pipeline.submission import Item
from cvunet_matting.states import FailureCode
from cvunet_matting.webapp.api.auth import bearer_key, key_actor
from cvunet_matting.webapp.errors import STORAGE_ERRNOS, UNAVAILABLE, status_for
from cvunet_matting.webapp.inputs import check_filename, parse_options
from cvunet_matting.webapp.remote_image import UrlPolicy, fetch_image
from cvunet_matting.webapp.support import settings

from .running import Failed, StillRunning, run_image

bp = Blueprint("rembg", __name__)
REMBG_FIELDS = ("model", "a", "af", "ab", "ae", "om", "ppm")
QUERY_FIELDS = ("bgc", "extras")
TRUE = {"1", "true", "yes", "on", "t", "y"}
FALSE = {"0", "false", "no", "off", "f", "n", ""}
STILL_RUNNING_RETRY_S = 5


class Invalid(Exception):
    """A parameter FastAPI would refuse: 422 with its location."""

    def __init__(self, where: str, name: str, message: str):
        super().__init__(message)
        self.where, self.name, self.message = where, name, message


def flag(values, name: str, where: str) -> bool:
    text = values.get(name, "").strip().lower()
    if text not in TRUE | FALSE:
        raise Invalid(where, name, "value could not be parsed to a boolean")
    return text in TRUE


def number(values, name: str, where: str, default: int, top: int | None = 255) -> int:
    text = values.get(name, "").strip()
    if not text:
        return default
    if not text.isascii() or not text.isdigit() or (top is not None and int(text) > top):
        raise Invalid(where, name, f"a whole number from 0 to {top}" if top is not None else "a whole number")
    return int(text)


def options_from(values, where: str) -> MultiDict:
    """Our option fields from rembg's parameters (`values`: the form for POST, the query for GET)."""
    unknown = sorted(set(values) - {*REMBG_FIELDS, *QUERY_FIELDS, *EDGE_KEYS, "url", "file"})
    if unknown:
        raise Invalid(where, unknown[0], f"unknown parameter(s) {', '.join(unknown)}")
    model = values.get("model", "").strip() or "u2net"
    if model not in GENERAL_MODELS:
        raise Invalid(where, "model", f"this server runs one general model: use one of {', '.join(GENERAL_MODELS)}")
    fields = MultiDict({name: values[name] for name in EDGE_KEYS if values.get(name)})
    # Checked whether or not alpha matting is on, as rembg's server checks them (0-255 each).
    foreground, background = number(values, "af", where, 240), number(values, "ab", where, 10)
    if flag(values, "a", where):
        fields.setdefault("opaque_threshold", str(foreground))
        fields.setdefault("alpha_threshold", str(background))
    number(values, "ae", where, 10, top=None)  # checked as rembg does, then ignored
    flag(values, "ppm", where)
    if flag(values, "om", where):
        fields["alpha_only"] = "true"
    query = request.args
    if query.get("extras", "").strip() not in {"", "{}"}:
        raise Invalid("query", "extras", "model-specific extras are not supported here")
    if query.get("bgc"):
        fields["bg_color"] = opaque_color(query["bgc"])
    return fields


def opaque_color(text: str) -> str:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in (3, 4) or not all(p.isascii() and p.isdigit() and int(p) <= 255 for p in parts):
        raise Invalid("query", "bgc", "use r,g,b,a with each from 0 to 255")
    if len(parts) == 4 and parts[3] != "255":
        raise Invalid("query", "bgc", "only an opaque background colour (a = 255) is supported here")
    return ",".join(parts[:3])


@bp.before_request
def authenticate():
    if current_app.extensions["cvunet.auth"].single_user:
        g.actor = accounts.OPERATOR
        return None
    given = bearer_key()
    actor = key_actor(given) if given else None
    if actor is None:
        message = "send one of your API keys: 'Authorization: Bearer <key>'"
        return jsonify({"detail": message}), 401, {"WWW-Authenticate": 'Bearer realm="cvunet-matting"'}
    g.actor = actor
    return None


@bp.post("/api/remove")
def remove_posted():
    fields = options_from(request.form, "body")
    if set(request.files) - {"file"}:
        raise Invalid("body", sorted(set(request.files) - {"file"}, key=str)[0] or "", "the image goes in 'file'")
    upload = request.files.get("file")
    if upload is None:
        raise Invalid("body", "file", "field required")
    return cut_out(Item(check_filename(upload.filename), upload.read()), fields)


@bp.get("/api/remove")
def remove_fetched():
    fields = options_from(request.args, "query")
    url = request.args.get("url", "")
    if not url:
        raise Invalid("query", "url", "field required")
    return cut_out(Item("image", fetch_image(url, UrlPolicy.of(settings()))), fields)


def cut_out(item: Item, fields: MultiDict):
    try:
        finished = run_image(g.actor, item, parse_options(fields))
    except Failed as failed:
        status = 400 if failed.code == FailureCode.REFUSED else 500
        return jsonify({"detail": failed.reason}), status
    except StillRunning as running:
        detail = f"still being processed: GET /api/v1/tasks/{running.task_id} with the same key, or ask again"
        return jsonify({"detail": detail}), 503, {"Retry-After": str(STILL_RUNNING_RETRY_S)}
    response = make_response(finished.data, 200, {"X-Task-Id": finished.task_id})
    response.mimetype = finished.mimetype
    return response


@bp.errorhandler(Invalid)
def _invalid(exc: Invalid):
    return jsonify({"detail": [{"loc": [exc.where, exc.name], "msg": exc.message, "type": "value_error"}]}), 422


@bp.errorhandler(InputError)
def _input_error(exc: InputError):
    status = 422 if exc.code == ErrorCode.BAD_OPTION else status_for(exc.code)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    return jsonify({"detail": exc.reason}), status, headers


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return jsonify({"detail": exc.description or exc.name}), exc.code or 500


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):
    if isinstance(exc, UNAVAILABLE) or (isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS):
        return jsonify({"detail": "the queue, the database or the storage is unavailable; try again shortly"}), 503
    current_app.logger.exception("unhandled error on %s %s", request.method, request.path)
    return jsonify({"detail": "internal error; it was logged"}), 500
