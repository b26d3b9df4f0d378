"""What the API's downloads send: a task's result, alpha matte or original, and a batch's ZIP.

Each answers from the row alone: a stored file (reached only through Storage.resolve), its media
type and a download name that never comes from the client as a path; a 404 JSON while not ready,
a 410 once retention removed it (the caller has already checked that the row is the actor's).
Files go out through send_file with their path, so ETag, Last-Modified, conditional GETs (304) and
ranges come with them; the alpha matte of a cut-out too, once derived (alpha_matte).
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from flask import current_app, send_file

from cvunet_matting.db.rows import BatchRow, TaskRow
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.imaging import input_media_type, sniff_extension
from cvunet_matting.states import BatchState, TaskState
from cvunet_matting.storage.files import Storage, raw_matte_path
from cvunet_matting.storage.naming import safe_stem

from . import polling
from .alpha_matte import Busy
from .presenters import has_alpha, iso, public_error
from .support import settings

NO_MATTE = (
    "this result has no raw matte (it was made before mattes were kept, or its files were removed): submit"
    " the image again to adjust its edges"
)


def stored(relative: str) -> Path:
    """A stored file, only ever reached through Storage.resolve (which refuses escapes)."""
    path = Storage(settings().data_dir).resolve(relative)
    if not path.is_file():
        raise InputError("the file is no longer in storage", code=ErrorCode.NOT_FOUND)
    return path


def expired(what: str, row: TaskRow | BatchRow, whose: str = "task") -> InputError:
    """410, not 404: the file existed and will not come back, so a client should stop asking."""
    days = settings().retention_days
    after = f"after {days} days" if days > 0 else "after the retention period"
    message = f"this {what} was removed {after} (retention); the {whose}'s record is kept"
    return InputError(message, code=ErrorCode.EXPIRED, expired_at=iso(row["expired_at"]))


def unfinished(message: str, row: TaskRow | BatchRow) -> InputError:
    """A file of unfinished work: 404 with the same Retry-After its status would give."""
    seconds = int(polling.header(polling.retry_after(row, current_app.extensions["cvunet.pace"])))
    return InputError(message, code=ErrorCode.NOT_READY, retry_after=seconds, state=row["state"])


def not_ready(what: str, row: TaskRow) -> InputError:
    """A task's file before its success: a failed task's 404 is for good."""
    if row["state"] == TaskState.FAILURE:
        return InputError(f"the task failed: {public_error(row)}", code=ErrorCode.FAILED, state=row["state"])
    return unfinished(f"the {what} is not ready yet", row)


def result(row: TaskRow, attachment: bool):
    if row.get("expired_at"):
        raise expired("result", row)
    if row["state"] != TaskState.SUCCESS:
        raise not_ready("result", row)
    path = stored(row["output_path"])
    mimetype = OutputOptions.from_dict(row["options"]).mimetype
    # Never the upload's own name: a JPEG flattened from photo.jpg would land on the original.
    name = f"{safe_stem(path.name)}-cutout{path.suffix}"
    return send_file(path, mimetype=mimetype, as_attachment=attachment, download_name=name)


def matte(row: TaskRow, attachment: bool):
    """The alpha matte as a grey PNG, taken from the stored cut-out (flattened outputs have none)."""
    if row.get("expired_at"):
        raise expired("alpha matte", row)
    if row["state"] != TaskState.SUCCESS:
        raise not_ready("alpha matte", row)
    if not has_alpha(row):
        raise InputError("this result was flattened on a colour: it has no alpha channel", code=ErrorCode.NOT_FOUND)
    path = stored(row["output_path"])
    name = f"{safe_stem(path.name)}-alpha.png"
    if OutputOptions.from_dict(row["options"]).alpha_only:  # the result is the matte itself
        return send_file(path, mimetype="image/png", as_attachment=attachment, download_name=name)
    try:  # a cut-out: its matte, derived on the first request and kept beside it
        matte = current_app.extensions["cvunet.alpha"].matte(path)
    except Busy as busy:
        message = "too many alpha mattes are being prepared at once; try again shortly"
        raise InputError(message, code=ErrorCode.BUSY, retry_after=busy.retry_after) from None
    body = BytesIO(matte) if isinstance(matte, bytes) else matte  # bytes: it could not be stored, this once
    return send_file(body, mimetype="image/png", as_attachment=attachment, download_name=name)


def raw_matte_path_of(row: TaskRow) -> Path | None:
    """Where a finished task's raw matte lies, if it is there (None: expired, unfinished, or made
    before mattes were kept, or its files are gone)."""
    if row.get("expired_at") or row["state"] != TaskState.SUCCESS or not row["output_path"]:
        return None
    path = raw_matte_path(Storage(settings().data_dir).resolve(row["output_path"]))
    return path if path.is_file() else None


def raw_matte(row: TaskRow, attachment: bool):
    """The model's own matte (before any edge step) as the grey PNG kept beside the result: what the
    task page's "Adjust edges" preview draws from. 410 `no_matte` where there is none to send."""
    if row.get("expired_at"):
        raise expired("raw matte", row)
    if row["state"] != TaskState.SUCCESS:
        raise not_ready("raw matte", row)
    path = raw_matte_path_of(row)
    if path is None:
        raise InputError(NO_MATTE, code=ErrorCode.NO_MATTE)
    name = f"{safe_stem(row['filename'] or 'task')}-raw-matte.png"
    return send_file(path, mimetype="image/png", as_attachment=attachment, download_name=name)


def original(row: TaskRow, attachment: bool):
    """The upload as stored, its type sniffed from its first bytes (never the client's file name)."""
    if row.get("expired_at"):
        raise expired("upload", row)
    if not row["input_key"]:
        raise InputError("nothing was stored for this file: it was refused on arrival", code=ErrorCode.NOT_FOUND)
    storage = Storage(settings().data_dir)
    path = stored(storage.relative(storage.input_path(row["input_key"])))
    with path.open("rb") as fh:
        extension = sniff_extension(fh.read(64)) or ".bin"
    name = f"{safe_stem(row['filename'])}{extension}"
    return send_file(path, mimetype=input_media_type(extension), as_attachment=attachment, download_name=name)


def batch_zip(batch: BatchRow):
    if batch.get("expired_at"):
        raise expired("ZIP", batch, "batch")
    if batch["state"] != BatchState.DONE:
        raise unfinished("the batch is not finished yet", batch)
    if not batch["zip_path"]:
        raise InputError(
            "the batch has no ZIP: it could not be written (the details were logged)", code=ErrorCode.NO_ZIP
        )
    path = stored(batch["zip_path"])
    return send_file(path, mimetype="application/zip", as_attachment=True, download_name=path.name)
