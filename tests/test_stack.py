"""The whole stack through the real Traefik binary: 2 gunicorn instances, a worker, Flower."""

from __future__ import annotations

import json
import signal

import pytest

from cvunet_matting import db
from cvunet_matting.db import reads
from tests import support
from tests.support import png_bytes
from tests.support.httpclient import matte_over_http, multipart, request

pytestmark = [pytest.mark.services, pytest.mark.stack]


@pytest.fixture(scope="module")
def stack(database, tmp_root):
    support.require_tool("traefik")  # the stack looks for it where require_tool does
    from cvunet_matting.devstack.run import wait_ready
    from cvunet_matting.devstack.stack import Ports, Stack

    ports = Ports(
        http=support.free_port(),
        ping=support.free_port(),
        web=(support.free_port(), support.free_port()),
        flower=support.free_port(),
    )
    stack = Stack(tmp_root / "stack", ports, workers=1, flower_password="flower-test-pw")
    stack.start()
    try:
        wait_ready(stack.url, stack, timeout=90)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def user(database) -> support.TestUser:
    """The API wants a key: a user in the database the stack's web instances read."""
    return support.make_user()


def test_upload_through_traefik_gives_a_result_and_a_postgres_row(stack, user):
    outcome = matte_over_http(stack.url, "through traefik.png", png_bytes(7), auth=user.bearer)
    assert outcome["ok"], outcome
    assert outcome["bytes"] > 100
    with db.transaction() as cur:
        row = reads.get_task(cur, outcome["task_id"])
    assert row["state"] == "success" and row["filename"] == "through traefik.png"


def test_requests_still_succeed_with_one_web_instance_down(stack, user):
    stack.procs["web1"].send_signal(signal.SIGTERM)
    stack.procs["web1"].wait(timeout=30)
    try:
        results = [request("GET", f"{stack.url}/healthz")[0] for _ in range(30)]
        assert results == [200] * 30
        outcome = matte_over_http(stack.url, "one-down.png", png_bytes(8), auth=user.bearer)
        assert outcome["ok"], outcome
    finally:
        stack.start_web(0)


def test_flower_sits_behind_basic_auth(stack):
    import base64

    status, _ = request("GET", f"{stack.url}/flower/")
    assert status == 401
    token = base64.b64encode(b"admin:flower-test-pw").decode()
    status, body = request("GET", f"{stack.url}/flower/workers", headers={"Authorization": f"Basic {token}"})
    assert status == 200 and b"cpu0@" in body


def test_api_refuses_bad_input_with_json_through_traefik(stack, user):
    body, ctype = multipart("file", "notes.txt", b"hello, not an image")
    status, raw = request("POST", f"{stack.url}/api/v1/images", body, {"Content-Type": ctype, **user.bearer})
    assert (status, json.loads(raw)["error"]["code"]) == (415, "not_an_image")
