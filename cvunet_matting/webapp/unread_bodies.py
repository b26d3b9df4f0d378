"""A request body the app answered without reading is read to its end before the answer goes out.

Many answers come before the body is read: 401 for a wrong key, 400 for a missing `file` field or a body
that is no form, 429 from the rate limits. gunicorn (27) then discards at most 64 KiB of what is left and
closes the connection. The sender (a client, or Traefik, which sends a buffered upload whole) is still
writing; the closed socket answers it with a reset, and a reset that arrives before the answer was read
throws the answer away: the client sees a connection error and Traefik answers 502 instead of the app's
JSON error (compose CI met one, for a 4 MiB body sent as application/octet-stream). Read to its end, the
body leaves the connection clean: the answer arrives and the connection stays open for the next request.

Bodies declared larger than the upload limit are left unread: their 413 closes the connection, as it
must, rather than take in up to a gigabyte first (Traefik refuses those before they reach gunicorn).
Only a server that says its input ends where the body ends (`wsgi.input_terminated`, as gunicorn does)
is read to the end: Werkzeug's development server hands over the raw socket, where a read past the body
waits for the client's next request (the test suite's werkzeug servers hung on every GET).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

CHUNK = 256 * 1024


class ReadUnreadBodies:
    """WSGI middleware: after the app returns, whatever it left of a body up to `limit` bytes is read."""

    def __init__(self, app: Callable[..., Iterable[bytes]], limit: int):
        self.app = app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        try:
            return self.app(environ, start_response)
        finally:
            discard_rest(environ, self.limit)


def discard_rest(environ: dict[str, Any], limit: int) -> int:
    """Read what is left of the request body, unless its declared length passes `limit`; at most `limit`
    bytes (a chunked body declares none). Returns how many bytes were read."""
    stream = environ.get("wsgi.input")
    if stream is None or not environ.get("wsgi.input_terminated") or declared_length(environ) > limit:
        return 0
    read = 0
    try:
        while read <= limit:
            chunk = stream.read(min(CHUNK, limit + 1 - read))
            if not chunk:
                break
            read += len(chunk)
    except OSError:  # the client went away (gunicorn's NoMoreData is one): there is nobody to answer
        pass
    return read


def declared_length(environ: dict[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0
