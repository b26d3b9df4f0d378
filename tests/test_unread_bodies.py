"""A body the app answers without reading (a 400 for a body that is no form, a 401 for a wrong key) is read
to its end first, so the answer arrives and the connection stays open. Before, gunicorn discarded 64 KiB
of it and closed the connection; the sender, still writing, met a reset (compose CI: Traefik's 502 for a
4 MiB octet-stream upload). The gunicorn test runs the production settings: gunicorn_conf, gthread."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cvunet_matting.webapp.unread_bodies import discard_rest
from tests import support
from tests.support.httpclient import fetch, multipart
from tests.support.images import png_bytes

BIG = 8 * 2**20  # more than loopback's socket buffers take in while nobody reads
TERMINATED = {"wsgi.input_terminated": True}  # as gunicorn says of its input


class Failing(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise ConnectionResetError("gone")


def test_the_rest_of_a_body_is_read_and_nothing_past_the_limit():
    body = io.BytesIO(b"x" * 1000)
    body.read(100)
    assert discard_rest({"wsgi.input": body, "CONTENT_LENGTH": "1000", **TERMINATED}, limit=5000) == 900
    assert body.read() == b""
    chunked = io.BytesIO(b"y" * 10_000)  # no declared length: read no further than the limit (and a byte)
    assert discard_rest({"wsgi.input": chunked, **TERMINATED}, limit=4000) == 4001


def test_a_body_declared_past_the_limit_is_left_and_a_gone_client_is_no_error():
    body = io.BytesIO(b"x" * 100)
    assert discard_rest({"wsgi.input": body, "CONTENT_LENGTH": "100", **TERMINATED}, limit=99) == 0
    assert body.tell() == 0
    assert discard_rest({"wsgi.input": Failing(), "CONTENT_LENGTH": "10", **TERMINATED}, limit=99) == 0
    assert discard_rest({"CONTENT_LENGTH": "10", **TERMINATED}, limit=99) == 0


def test_a_raw_socket_input_is_never_read():
    """Werkzeug's development server hands over the socket itself (no wsgi.input_terminated): a read
    there would wait for the client's next request."""
    body = io.BytesIO(b"x" * 100)
    assert discard_rest({"wsgi.input": body, "CONTENT_LENGTH": "100"}, limit=1000) == 0
    assert body.tell() == 0


@pytest.fixture
def gunicorn_base(clean_state, tmp_path) -> Iterator[str]:
    port = support.free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    command = [sys.executable, "-m", "gunicorn", "-c", "python:cvunet_matting.webapp.gunicorn_conf"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread", "--threads", "8"]
    with (tmp_path / "web.log").open("wb") as log:
        proc = subprocess.Popen(
            [*command, "cvunet_matting.web:create_app()"], env=env, stdout=log, stderr=log, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        support.wait_until(lambda: answers(base), 60, message="gunicorn answering")
        yield base
    finally:
        support.kill_group(proc, signal.SIGTERM)


def answers(base: str) -> bool:
    try:
        return fetch("GET", base + "/healthz", timeout=5)[0] == 200
    except OSError:
        return False


def post_then_get(base: str, body: bytes, headers: dict) -> tuple[int, dict, int]:
    """POST `body` to /api/v1/images, then GET /healthz on the same connection: the POST's status and
    JSON and the GET's status. http.client opens no new connection unless an answer said to close."""
    port = int(base.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/api/v1/images", body=body, headers=headers)
        first = conn.getresponse()
        error = json.loads(first.read())
        assert first.getheader("Connection", "").lower() != "close"
        sock = conn.sock
        conn.request("GET", "/healthz")
        assert conn.sock is sock  # the same connection
        second = conn.getresponse()
        second.read()
        return first.status, error, second.status
    finally:
        conn.close()


def test_an_octet_stream_body_gets_its_400_and_the_connection_lives_on(gunicorn_base):
    user = support.make_user(prefix="bodies")
    headers = {"Content-Type": "application/octet-stream", **user.bearer}
    status, error, after = post_then_get(gunicorn_base, b"x" * BIG, headers)
    assert status == 400 and error["error"]["code"] == "no_file"
    assert after == 200


def test_a_large_upload_with_a_wrong_key_gets_its_401_and_the_connection_lives_on(gunicorn_base):
    body, ctype = multipart("file", "big.png", png_bytes(3) + b"\0" * BIG)
    status, error, after = post_then_get(
        gunicorn_base, body, {"Content-Type": ctype, "Authorization": "Bearer wrong-key"}
    )
    assert status == 401 and error["error"]["code"] == "unauthorized"
    assert after == 200
