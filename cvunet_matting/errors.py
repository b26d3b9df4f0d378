"""Exceptions that carry a user-facing reason."""


class MattingError(Exception):
    """Base class: `code` is stable for scripts, the message is for people."""

    code = "error"
    retry_after: int | None = None  # seconds after which asking again may succeed (a quota), if known

    def __init__(self, message: str, code: str | None = None, **details: object):
        super().__init__(message)
        if code:
            self.code = code
        self.details = details  # more for a script to read (e.g. the files a batch refused), sent beside the code

    @property
    def reason(self) -> str:
        return str(self)


class InputError(MattingError):
    """The input itself is bad (not an image, too large...): retrying cannot help."""

    code = "bad_input"


class ModelError(MattingError):
    """The model file or its manifest is missing or inconsistent."""

    code = "model"


class DeviceError(MattingError):
    """The requested execution provider (e.g. CUDA) is not available."""

    code = "device"


def one_line(error: object) -> str:
    """A driver's multi-line message (psycopg2 adds hints on new lines) as one line for a CLI."""
    return " ".join(str(error).split())


class ImageFailed(Exception):
    """A single image (outside any batch) failed for good; the message is the reason."""
