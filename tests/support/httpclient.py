"""A tiny HTTP client for tests, benchmarks and load scripts: multipart upload, poll, download."""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request


def multipart(field: str, filename: str, data: bytes, extra: dict | None = None) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    parts = []
    for name, value in (extra or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def fetch(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 120):
    """(status, body, headers); HTTP errors are answers too."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310 (our own 127.0.0.1 stack)
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def request(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 120):
    status, raw, _ = fetch(method, url, body, headers, timeout)
    return status, raw


def matte_over_http(
    base: str,
    filename: str,
    data: bytes,
    poll: float | None = None,
    timeout: float = 600,
    auth: dict | None = None,
    wait: float | None = None,
) -> dict:
    """Upload one image, wait for it, download the result; returns status and latency.

    Polls as often as the server's Retry-After says, as a well-behaved client would, unless `poll`
    (seconds) overrides it. With `wait` (seconds), it polls not at all: the upload and each status
    request ask the server to hold the answer until the task ends (?wait=), and `answered` is the
    time from the upload to the final state. `auth` (headers, e.g. a user's Bearer key) goes with
    every request. A network error is an outcome too (status 0), not an exception."""
    started = time.perf_counter()
    try:
        return _matte_over_http(base, filename, data, poll, timeout, auth or {}, wait)
    except OSError as exc:  # refused, reset, timed out
        return {"ok": False, "status": 0, "error": repr(exc), "latency": time.perf_counter() - started}


def _matte_over_http(
    base: str, filename: str, data: bytes, poll: float | None, timeout: float, auth: dict, wait: float | None
) -> dict:
    started = time.perf_counter()
    body, ctype = multipart("file", filename, data)
    held = f"?wait={wait:g}" if wait else ""
    status, raw = request("POST", f"{base}/api/v1/images{held}", body, {"Content-Type": ctype, **auth})
    if status not in (202, 200) or (status == 200 and not wait):
        latency = time.perf_counter() - started
        return {"ok": False, "status": status, "stage": "upload", "error": raw[:200], "latency": latency}
    task = json.loads(raw)
    task_id = task["task_id"]
    deadline, polls = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        if status != 200:  # 202: not finished yet (with ?wait=, not within it)
            polls += 1
            status, raw, headers = fetch("GET", f"{base}/api/v1/tasks/{task_id}{held}", headers=auth)
            task = json.loads(raw) if status == 200 else {}
        if task.get("state") == "failure":
            return {
                "ok": False,
                "status": status,
                "stage": "task",
                "error": task.get("error"),
                "latency": time.perf_counter() - started,
            }
        if task.get("state") == "success":
            break
        if not wait or status == 429:  # the body's hint has sub-second resolution; Retry-After, whole seconds
            hint = task.get("poll_after_s") or float(headers.get("Retry-After") or 1)
            time.sleep(poll if poll is not None else hint)
        status = 0
    answered = time.perf_counter() - started
    status, result = request("GET", f"{base}/api/v1/tasks/{task_id}/result", headers=auth)
    return {
        "ok": status == 200,
        "status": status,
        "error": None if status == 200 else result[:200],
        "stage": "download",
        "bytes": len(result),
        "latency": time.perf_counter() - started,
        "task_id": task_id,
        "polls": polls,
        "answered": answered,
    }
