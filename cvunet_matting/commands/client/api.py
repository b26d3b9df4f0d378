"""The server's /api/v1, over HTTP and nothing else: the calls the client makes, each refusal turned into
an ApiError (or a ClientError saying what the user should change), waits the server asks for honoured."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from urllib.parse import quote, urljoin

from .credentials import Credentials
from .errors import ApiError, ClientError

PREFIX = "/api/v1"
TIMEOUT_S = 120  # longer than the longest ?wait= (30 s) and a large batch's upload through a proxy
CHUNK = 256 * 1024
BUSY_CODES = {"too_many_waits", "too_many_downloads", "busy", "storage_unavailable"}
PATIENCE_S = 120  # waits the server asks for (Retry-After) are honoured up to this, summed, per call


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Message

    def json(self) -> dict:
        try:
            value = json.loads(self.body)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ClientError(f"the server answered {self.status} with no JSON: is this the matting server's URL?")
        return value


@dataclass(frozen=True)
class Part:
    """One file of a batch upload, named as the server should list it (its path under the folder)."""

    name: str
    data: bytes

    def header(self, boundary: str) -> bytes:
        # Plain ASCII names go as filename="..."; any other as RFC 5987's filename*, which the server reads.
        if self.name.isascii() and self.name.isprintable() and not set(self.name) & {'"', "\\"}:
            disposition = f'filename="{self.name}"'
        else:
            disposition = f"filename*=UTF-8''{quote(self.name, safe='')}"
        return (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; {disposition}\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()


BOUNDARY_LEN = 32


def part_size(part: Part) -> int:
    """The bytes a part takes in the request: its header, data and line end (the boundary's length fixed)."""
    return len(part.header("x" * BOUNDARY_LEN)) + len(part.data) + 2


def closing_size() -> int:
    return BOUNDARY_LEN + 6  # --BOUNDARY--\r\n


def field_part(boundary: str, name: str, value: str) -> bytes:
    return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()


def fields_size(fields: dict[str, str]) -> int:
    """The bytes the form's option fields take in every batch request."""
    return sum(len(field_part("x" * BOUNDARY_LEN, k, v)) for k, v in fields.items())


class Api:
    def __init__(self, credentials: Credentials):
        self.server = credentials.server
        self.auth = {"Authorization": f"Bearer {credentials.key}", "Accept": "application/json"}
        self.server_time: datetime | None = None  # the Date of the server's last answer

    def batches(self, limit: int) -> list[dict]:
        """The caller's newest batches."""
        return self.call("GET", f"batches?limit={limit}").json()["batches"]

    def url(self, path: str) -> str:
        """A path the server gave (its own links start with /) or one under /api/v1."""
        return urljoin(self.server + "/", path) if path.startswith("/") else f"{self.server}{PREFIX}/{path}"

    def limits(self) -> dict:
        return self.call("GET", "limits").json()

    def batch(self, batch_id: str, wait: float = 0, seen: int | None = None, offset: int = 0, limit: int = 0) -> dict:
        query = f"offset={offset}&limit={limit}" + (f"&wait={wait:g}" if wait else "")
        query += f"&seen={seen}" if seen is not None else ""
        return self.call("GET", f"batches/{batch_id}?{query}", timeout=TIMEOUT_S + wait).json()

    def download(self, path: str) -> Answer:
        return self.call("GET", path)

    def submit_batch(self, parts: list[Part], fields: dict[str, str], on_part: Callable[[Part], None]) -> dict:
        """POST /batches with the option `fields` and the parts streamed from memory; `on_part` after each
        part is sent."""
        boundary = secrets.token_hex(BOUNDARY_LEN // 2)
        length = fields_size(fields) + sum(part_size(p) for p in parts) + closing_size()

        def body() -> Iterator[bytes]:
            for name, value in fields.items():
                yield field_part(boundary, name, value)
            for part in parts:
                yield part.header(boundary)
                for start in range(0, len(part.data), CHUNK):
                    yield part.data[start : start + CHUNK]
                yield b"\r\n"
                on_part(part)
            yield f"--{boundary}--\r\n".encode()

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length)}
        # A refused answer (429, 503) is asked again with a new body: the generator is made per try.
        return self.call("POST", "batches", body, headers, retry_busy=False).json()

    def call(
        self,
        method: str,
        path: str,
        body: Callable[[], Iterator[bytes]] | None = None,
        headers: dict | None = None,
        timeout: float = TIMEOUT_S,
        retry_busy: bool = True,
    ) -> Answer:
        """The answer of a 2xx; an ApiError otherwise, after waiting out Retry-After on a busy server."""
        waited = 0.0
        while True:
            answer = self._send(method, self.url(path), body, headers or {}, timeout)
            if answer.status < 400:
                return answer
            error = self._error(answer)
            if not (retry_busy and error.code in BUSY_CODES) or error.retry_after is None:
                raise error
            if waited + error.retry_after > PATIENCE_S:
                raise error
            time.sleep(error.retry_after)
            waited += error.retry_after

    def _send(self, method, url, body, headers, timeout) -> Answer:
        data = body() if body else None
        # The server's URL was held to http or https (credentials.py); its own links are paths under it.
        request = urllib.request.Request(url, data=data, method=method, headers={**self.auth, **headers})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                answer = Answer(response.status, response.read(), response.headers)
        except urllib.error.HTTPError as exc:
            answer = Answer(exc.code, exc.read(), exc.headers)
        except OSError as exc:  # URLError, refused, reset, timed out
            reason = getattr(exc, "reason", None) or exc
            raise ClientError(f"cannot reach {self.server}: {reason}") from None
        with contextlib.suppress(TypeError, ValueError):  # no Date: keep the last one
            self.server_time = parsedate_to_datetime(answer.headers.get("Date", ""))
        return answer

    def _error(self, answer: Answer) -> ApiError:
        if answer.status == 401:
            raise ClientError(f"{self.server} refused the API key (401): check CVUNET_API_KEY or the config file")
        try:
            error = answer.json().get("error") or {}
        except ClientError:
            error = {}
        retry = answer.headers.get("Retry-After")
        return ApiError(
            answer.status,
            str(error.get("code") or f"http_{answer.status}"),
            str(error.get("message") or answer.body[:200].decode("utf-8", "replace") or "no reason given"),
            float(retry) if retry and retry.replace(".", "", 1).isdigit() else None,
            error if isinstance(error, dict) else {},
        )
