"""Exceptions that carry a user-facing reason, and the stable codes scripts read from them."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Why a request was refused, as the JSON API's `error.code` says it (webapp/errors.py gives each
    its HTTP status). A StrEnum: each member is its own string in JSON, logs and comparisons."""

    ERROR = "error"
    BAD_INPUT = "bad_input"
    MODEL = "model"
    DEVICE = "device"
    # the request itself
    BAD_ID = "bad_id"
    BAD_OPTION = "bad_option"
    BAD_REQUEST = "bad_request"
    BAD_FILENAME = "bad_filename"
    BAD_OUTPUT_PATH = "bad_output_path"
    NO_FILE = "no_file"
    ONE_FILE = "one_file"
    UNKNOWN_FIELD = "unknown_field"
    TOO_LARGE = "too_large"
    BAD_URL = "bad_url"  # an image URL refused: off, a host not allowed, a private address, not http(s)
    URL_FAILED = "url_failed"  # an allowed image URL could not be fetched (status, size, time)
    # the image
    EMPTY = "empty"
    SVG = "svg"
    NOT_AN_IMAGE = "not_an_image"
    UNSUPPORTED_FORMAT = "unsupported_format"
    TRUNCATED = "truncated"
    TOO_MANY_PIXELS = "too_many_pixels"
    MISSING_INPUT = "missing_input"
    EMPTY_SUBJECT = "empty_subject"  # a crop asked for, and the matte holds no subject to crop to
    # a server-side folder
    FORBIDDEN_PATH = "forbidden_path"
    EMPTY_FOLDER = "empty_folder"
    # who asks
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    UNKNOWN_HOST = "unknown_host"
    CROSS_SITE = "cross_site"
    QUOTA_EXCEEDED = "quota_exceeded"
    TOO_MANY_WAITS = "too_many_waits"
    TOO_MANY_DOWNLOADS = "too_many_downloads"
    BATCH_TOO_LARGE = "batch_too_large"
    # accounts
    BAD_NAME = "bad_name"
    WEAK_PASSWORD = "weak_password"  # noqa: S105 (an error code, not a password)
    EXISTS = "exists"
    # the work named
    NOT_FOUND = "not_found"
    NOT_READY = "not_ready"
    FAILED = "failed"
    EXPIRED = "expired"
    NO_MATTE = "no_matte"
    NOT_DONE = "not_done"
    NO_ZIP = "no_zip"
    NOT_FAILED = "not_failed"
    POISON_INPUT = "poison_input"
    EXPIRED_TASK = "expired_task"
    REFUSED_INPUT = "refused_input"
    NOT_PENDING = "not_pending"
    NOT_FINISHED = "not_finished"
    IN_BATCH = "in_batch"
    # the service's own state
    STORAGE_UNAVAILABLE = "storage_unavailable"
    BUSY = "busy"


class MattingError(Exception):
    """Base class: `code` is stable for scripts, the message is for people."""

    code: ErrorCode = ErrorCode.ERROR
    retry_after: int | None = None  # seconds after which asking again may succeed (a quota), if known

    def __init__(
        self, message: str, code: ErrorCode | None = None, *, retry_after: int | None = None, **details: object
    ):
        super().__init__(message)
        if code:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after
        self.details = details  # more for a script to read (e.g. the files a batch refused), sent beside the code

    @property
    def reason(self) -> str:
        return str(self)


class InputError(MattingError):
    """The input itself is bad (not an image, too large...): retrying cannot help."""

    code = ErrorCode.BAD_INPUT


class ModelError(MattingError):
    """The model file or its manifest is missing or inconsistent."""

    code = ErrorCode.MODEL


class DeviceError(MattingError):
    """The requested execution provider (e.g. CUDA) is not available."""

    code = ErrorCode.DEVICE


def one_line(error: object) -> str:
    """A driver's multi-line message (psycopg2 adds hints on new lines) as one line for a CLI."""
    return " ".join(str(error).split())


class ImageFailed(Exception):
    """A single image (outside any batch) failed for good; the message is the reason."""
