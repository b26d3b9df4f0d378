"""What the API and the pages read from a request: ids, output options, uploads, and the rows they name.

Everything here refuses bad input with an InputError, which the error handlers turn into a 4xx.
"""

from __future__ import annotations

import uuid

from . import db, submission
from .db import reads
from .encoding import OutputOptions
from .errors import InputError
from .http_support import settings
from .imaging import probe


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


def task_row(task_id: str) -> dict:
    with db.transaction() as cur:
        row = reads.get_task(cur, parse_id(task_id))
    if row is None:
        raise InputError(f"no task {task_id}", code="not_found")
    return row


def load_batch(batch_id: str, offset: int, limit: int) -> tuple[dict, dict, list[dict]]:
    """The batch row, its counts by state, and `limit` of its items from `offset`."""
    bid = parse_id(batch_id)
    with db.transaction() as cur:
        batch = reads.get_batch(cur, bid)
        if batch is None:
            raise InputError(f"no batch {batch_id}", code="not_found")
        return batch, reads.batch_counts(cur, bid), reads.batch_items(cur, bid, offset, limit)
