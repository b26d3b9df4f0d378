"""What the remote client says when it cannot go on: one line for the user, never a traceback."""

from __future__ import annotations


class ClientError(Exception):
    """A reason the whole run stops (wrong key, server unreachable, no such folder)."""


class ApiError(ClientError):
    """A refusal the API answered with its JSON error body."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None, details: dict | None = None
    ):
        super().__init__(f"{message} ({status} {code})")
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after
        self.details = details or {}  # the error object's other fields, e.g. `refused`
