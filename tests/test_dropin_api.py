"""The drop-in endpoints against real Redis, PostgreSQL and a real worker: remove.bg's POST /v1.0/removebg
and rembg's /api/remove, sent exactly what those clients send (field names, headers), answered with
bytes, headers and error bodies as theirs; keys, ownership and quotas as for /api/v1."""

from __future__ import annotations

import base64
import http.server
import io
import threading
import zipfile

import cv2
import numpy as np
import pytest
from werkzeug.serving import make_server

from cvunet_matting.web import create_app
from cvunet_matting.webapp import remote_image, waiting
from tests import support

pytestmark = [pytest.mark.services]
SIZE = (48, 64)  # rows, columns


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def removebg(client, key: str | None, files: dict | None = None, headers: dict | None = None, **data):
    """A request as remove.bg's own examples send it: multipart, the key in X-Api-Key."""
    body = dict(data)
    for name, payload in (files or {}).items():
        body[name] = (io.BytesIO(payload), f"{name}.png")
    sent = {"X-Api-Key": key} if key is not None else {}
    return client.post("/v1.0/removebg", data=body, headers={**sent, **(headers or {})})


def errors_of(response) -> list[dict]:
    body = response.get_json()
    assert set(body) == {"errors"} and all({"title", "code"} <= set(e) for e in body["errors"]), body
    return body["errors"]


@pytest.fixture
def alice_app(clean_state):
    return create_app({"TESTING": True})


@pytest.mark.stack
def test_removebg_answers_the_cut_out_with_its_headers_as_an_ordinary_task(alice_app, alice, worker_factory):
    worker_factory()
    client = alice_app.test_client()
    photo = support.png_bytes(1, SIZE)

    answer = removebg(client, alice.key, {"image_file": photo}, size="full")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.mimetype == "image/png"
    assert (answer.headers["X-Width"], answer.headers["X-Height"]) == (str(SIZE[1]), str(SIZE[0]))
    assert answer.headers["X-Type"] == "other" and answer.headers["X-Credits-Charged"] == "1"
    assert decode(answer.data).shape == (*SIZE, 4)
    task_id = answer.headers["X-Task-Id"]
    status = client.get(f"/api/v1/tasks/{task_id}", headers=alice.bearer).get_json()  # in the owner's history
    assert status["state"] == "success" and status["filename"] == "image_file.png"
    assert client.get(f"/api/v1/tasks/{task_id}/result", headers=alice.bearer).data == answer.data
    stranger = support.make_user(prefix="mallory")
    assert client.get(f"/api/v1/tasks/{task_id}", headers=stranger.bearer).status_code == 404

    as_json = removebg(
        client, alice.key, headers={"Accept": "application/json"}, image_file_b64=base64.b64encode(photo)
    )
    assert as_json.status_code == 200 and as_json.mimetype == "application/json"
    assert decode(base64.b64decode(as_json.get_json()["data"]["result_b64"])).shape == (*SIZE, 4)

    flat = removebg(client, alice.key, {"image_file": photo}, format="auto", bg_color="fff", type="product")
    assert flat.mimetype == "image/jpeg" and flat.headers["X-Type"] == "product"
    matte = removebg(client, alice.key, {"image_file": photo}, channels="alpha")
    assert matte.mimetype == "image/png" and decode(matte.data).shape == SIZE

    archive = removebg(client, alice.key, {"image_file": photo}, format="zip")
    assert archive.mimetype == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(archive.data)).namelist()
    assert sorted(names) == ["alpha.png", "color.jpg"]

    by_json = client.post(
        "/v1.0/removebg",
        json={"image_file_b64": base64.b64encode(photo).decode(), "format": "png"},
        headers={"X-Api-Key": alice.key},
    )
    assert by_json.status_code == 200 and by_json.mimetype == "image/png"


def test_removebg_refusals_are_in_its_shape_with_its_statuses(alice_app, alice):
    client = alice_app.test_client()
    photo = support.png_bytes(2, SIZE)
    missing = removebg(client, None, {"image_file": photo})
    assert missing.status_code == 403 and errors_of(missing)[0]["title"] == "Missing API Key"
    wrong = removebg(client, "not-a-key-of-ours", {"image_file": photo})
    assert wrong.status_code == 403 and errors_of(wrong)[0]["code"] == "auth_failed"
    cases = [
        ({}, {}, "missing_source"),
        ({"image_file": photo}, {"image_file_b64": "aGk="}, "multiple_sources"),
        ({"image_file": b"not an image"}, {}, "invalid_file_type"),
        ({}, {"image_file_b64": "%%%"}, "failed_to_read_image"),
        ({"image_file": photo}, {"channels": "rgb"}, "invalid_channels"),
        ({"image_file": photo}, {"roi": "10% 10% 50% 50%"}, "unsupported_roi"),
        ({"image_file": photo}, {"semitransparency": "true"}, "unknown_parameter"),
        ({}, {"image_url": "https://images.example.org/a.jpg"}, "invalid_image_url"),  # off by default
    ]
    for files, fields, code in cases:
        answer = removebg(client, alice.key, files, **fields)
        assert answer.status_code == 400 and errors_of(answer)[0]["code"] == code, (fields, answer.get_json())
    assert client.get("/api/v1/tasks", headers=alice.bearer).get_json()["total"] == 0  # nothing was queued


def test_removebg_over_a_quota_is_429_with_retry_after(clean_state, monkeypatch):
    monkeypatch.setattr(waiting, "MAX_WAIT_S", 0.2)  # no worker runs here: the first stays queued
    client = create_app({"TESTING": True}).test_client()
    capped = support.make_user(prefix="capped", max_per_day=1)
    assert removebg(client, capped.key, {"image_file": support.png_bytes(3, SIZE)}).status_code == 503
    answer = removebg(client, capped.key, {"image_file": support.png_bytes(3, SIZE)})
    assert answer.status_code == 429 and errors_of(answer)[0]["code"] == "rate_limit_exceeded"
    assert int(answer.headers["Retry-After"]) > 0


def account_of(client, key: str | None) -> tuple[int, dict]:
    answer = client.get("/v1.0/account", headers={"X-Api-Key": key} if key is not None else {})
    return answer.status_code, answer.get_json()


def test_removebg_account_says_the_images_left_today_and_asks_for_a_key(clean_state, monkeypatch):
    """remove.bg's balance call: a client checking its credits before sending sees what it may still send."""
    monkeypatch.setattr(waiting, "MAX_WAIT_S", 0.2)  # no worker runs here: the image stays queued
    client = create_app({"TESTING": True}).test_client()
    capped = support.make_user(prefix="capped", max_per_day=3)
    status, before = account_of(client, capped.key)
    assert status == 200
    attributes = before["data"]["attributes"]
    assert attributes["credits"] == {"total": 3, "subscription": 3, "payg": 0, "enterprise": 0}
    assert attributes["api"] == {"free_calls": 3, "sizes": "all"}
    assert attributes["quotas"]["max_per_day"] == 3 and attributes["usage"] == {"in_flight": 0, "today": 0}

    assert removebg(client, capped.key, {"image_file": support.png_bytes(5, SIZE)}).status_code == 503
    after = account_of(client, capped.key)[1]["data"]["attributes"]
    assert after["credits"]["total"] == 2 and after["usage"] == {"in_flight": 1, "today": 1}
    # Another user's balance is their own: the first user's image is not counted there.
    other = support.make_user(prefix="other", max_per_day=3)
    assert account_of(client, other.key)[1]["data"]["attributes"]["credits"]["total"] == 3

    for key, title in ((None, "Missing API Key"), ("not-a-key", "API Key invalid")):
        status, body = account_of(client, key)
        assert status == 403 and body["errors"][0]["code"] == "auth_failed" and body["errors"][0]["title"] == title


def test_removebg_account_without_a_daily_quota_reports_the_largest_count(clean_state):
    client = create_app({"TESTING": True}).test_client()
    free = support.make_user(prefix="free")  # no quotas
    attributes = account_of(client, free.key)[1]["data"]["attributes"]
    assert attributes["credits"]["total"] == 2**31 - 1 and attributes["quotas"]["max_per_day"] is None


def test_a_task_that_outlasts_the_wait_answers_503_and_goes_on(alice_app, alice, monkeypatch):
    monkeypatch.setattr(waiting, "MAX_WAIT_S", 0.2)  # no worker runs here: the task stays queued
    client = alice_app.test_client()
    answer = removebg(client, alice.key, {"image_file": support.png_bytes(4, SIZE)})
    assert answer.status_code == 503 and errors_of(answer)[0]["code"] == "still_processing"
    assert answer.headers["Retry-After"] == "5"
    tasks = client.get("/api/v1/tasks", headers=alice.bearer).get_json()["tasks"]
    assert [t["state"] for t in tasks] == ["pending"]


# ------------------------------------------------------------------ rembg's server


def rembg_post(client, key: str | None, photo: bytes, query: str = "", **form):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"file": (io.BytesIO(photo), "photo.png"), **form}
    return client.post(f"/api/remove{query}", data=body, headers=headers)


@pytest.mark.stack
def test_rembg_clients_get_png_bytes_with_its_parameters_mapped(alice_app, alice, worker_factory):
    worker_factory()
    client = alice_app.test_client()
    photo = support.png_bytes(5, SIZE)
    cut = rembg_post(client, alice.key, photo, model="u2net", a="true", af="240", ab="10", ae="10")
    assert cut.status_code == 200 and cut.mimetype == "image/png", cut.get_data(as_text=True)
    assert decode(cut.data).shape == (*SIZE, 4)
    options = client.get(f"/api/v1/tasks/{cut.headers['X-Task-Id']}", headers=alice.bearer).get_json()
    assert options["state"] == "success"
    mask = rembg_post(client, alice.key, photo, om="true")
    assert decode(mask.data).shape == SIZE
    flat = rembg_post(client, alice.key, photo, query="?bgc=255,0,0,255")
    assert decode(flat.data).shape == (*SIZE, 3)


def test_removebg_image_file_as_text_is_a_clear_400(alice_app, alice):
    """Schemathesis sent image_file as a form-urlencoded value: a 500 (KeyError) before."""
    answer = alice_app.test_client().post(
        "/v1.0/removebg",
        data={"image_file": "not a file", "format": "png"},
        headers={"X-Api-Key": alice.key},
        content_type="application/x-www-form-urlencoded",
    )
    assert answer.status_code == 400
    assert answer.get_json()["errors"][0]["code"] == "invalid_image_file"


def test_rembg_refusals(alice_app, alice):
    client = alice_app.test_client()
    photo = support.png_bytes(6, SIZE)
    assert rembg_post(client, None, photo).status_code == 401
    assert rembg_post(client, "wrong-key", photo).status_code == 401
    special = rembg_post(client, alice.key, photo, model="u2net_human_seg")
    assert special.status_code == 422 and special.get_json()["detail"][0]["loc"] == ["body", "model"]
    see_through = rembg_post(client, alice.key, photo, query="?bgc=0,0,0,128")
    assert see_through.status_code == 422
    for name, value in (("ab", "-1"), ("af", "256")):  # checked with alpha matting off too, as rembg does
        out_of_range = rembg_post(client, alice.key, photo, **{name: value})
        assert out_of_range.status_code == 422 and out_of_range.get_json()["detail"][0]["loc"] == ["body", name]
    fetched = client.get("/api/remove?url=https://images.example.org/a.jpg", headers=alice.bearer)
    assert fetched.status_code == 400 and "off" in fetched.get_json()["detail"]  # off by default
    assert client.get("/api/v1/tasks", headers=alice.bearer).get_json()["total"] == 0


# ------------------------------------------------------------------ an allowed image URL, and a real client


class OnePicture(http.server.BaseHTTPRequestHandler):
    picture = b""

    def do_GET(self):  # noqa: N802 (the standard library's name)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.picture)))
        self.end_headers()
        self.wfile.write(self.picture)

    def log_message(self, *args):
        pass


@pytest.fixture
def picture_server():
    OnePicture.picture = support.png_bytes(7, SIZE)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OnePicture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}/photo.png"
    server.shutdown()


@pytest.mark.stack
def test_an_allowed_host_is_fetched_and_a_loopback_one_never(
    clean_state, alice, worker_factory, picture_server, monkeypatch
):
    app = create_app({"TESTING": True, "CVUNET_IMAGE_URL_HOSTS": "localhost"})
    client = app.test_client()
    refused = client.get(f"/api/remove?url={picture_server}", headers=alice.bearer)
    assert refused.status_code == 400 and "private or local" in refused.get_json()["detail"]

    monkeypatch.setattr(remote_image, "is_public", lambda address: True)  # this test's server is on the loopback
    worker_factory()
    fetched = client.get(f"/api/remove?url={picture_server}", headers=alice.bearer)
    assert fetched.status_code == 200 and decode(fetched.data).shape == (*SIZE, 4)
    by_removebg = removebg(client, alice.key, image_url=picture_server, size="full")
    assert by_removebg.status_code == 200 and by_removebg.headers["X-Width"] == str(SIZE[1])


@pytest.fixture
def live_server(clean_state):
    app = create_app({"TESTING": True})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.stack
def test_the_removebg_python_client_works_against_us_unchanged_but_its_url(
    live_server, alice, worker_factory, tmp_path
):
    removebg_client = pytest.importorskip("removebg.removebg")
    worker_factory()
    photo = tmp_path / "photo.png"
    photo.write_bytes(support.png_bytes(8, SIZE))
    removebg_client.API_ENDPOINT = f"{live_server}/v1.0/removebg"  # the one change a user makes
    client = removebg_client.RemoveBg(alice.key, str(tmp_path / "errors.log"))
    client.remove_background_from_img_file(str(photo), size="full")
    result = decode((tmp_path / "photo.png_no_bg.png").read_bytes())
    assert result.shape == (*SIZE, 4)
    wrong = removebg_client.RemoveBg("a-wrong-key", str(tmp_path / "errors.log"))
    with pytest.raises(Exception, match="403"):
        wrong.remove_background_from_img_file(str(photo), size="full")


@pytest.mark.stack
def test_requests_as_the_readme_shows_them_for_both_apis(live_server, alice, worker_factory):
    """The README's two-line changes, over real HTTP with requests (rembg's CLI has no remote mode)."""
    import requests

    worker_factory()
    photo = support.png_bytes(9, SIZE)
    rembg = requests.post(
        f"{live_server}/api/remove",
        files={"file": ("photo.png", photo)},
        data={"om": "true"},
        headers={"Authorization": f"Bearer {alice.key}"},
        timeout=60,
    )
    assert rembg.status_code == 200 and rembg.headers["Content-Type"] == "image/png"
    assert decode(rembg.content).shape == SIZE  # the mask only
    removebg_answer = requests.post(
        f"{live_server}/v1.0/removebg",
        files={"image_file": ("photo.png", photo)},
        data={"size": "auto"},
        headers={"X-Api-Key": alice.key},
        timeout=60,
    )
    assert removebg_answer.status_code == 200 and removebg_answer.headers["X-Credits-Charged"] == "1"
    assert decode(removebg_answer.content).shape == (*SIZE, 4)


# ------------------------------------------------------------------ remove.bg's output controls (our core's)


def disc_photo(rows: int = 60, cols: int = 80, radius: int = 18) -> bytes:
    """A bright disc on a dark ground, centred: the tiny model's alpha is the brightness."""
    rgb = np.full((rows, cols, 3), 25, np.uint8)
    cv2.circle(rgb, (cols // 2, rows // 2), radius, (240, 240, 240), -1)
    return cv2.imencode(".png", cv2.add(rgb, support.noise((rows, cols, 3), 3) // 10))[1].tobytes()


@pytest.mark.stack
def test_removebg_output_controls_reach_the_task(alice_app, alice, worker_factory):
    worker_factory()
    client = alice_app.test_client()
    photo = disc_photo()

    cropped = removebg(client, alice.key, {"image_file": photo}, crop="true", crop_margin="0", size="full")
    assert cropped.status_code == 200, cropped.get_json()
    width, height = int(cropped.headers["X-Width"]), int(cropped.headers["X-Height"])
    assert 30 <= width <= 44 and 30 <= height <= 44  # the disc's box (37 px), not the 80 x 60 photo
    assert decode(cropped.data).shape == (height, width, 4)
    margin = removebg(client, alice.key, {"image_file": photo}, crop="true", crop_margin="5px", size="full")
    assert int(margin.headers["X-Width"]) == width + 10

    placed = removebg(client, alice.key, {"image_file": photo}, scale="50%", position="center", size="full")
    assert (placed.headers["X-Width"], placed.headers["X-Height"]) == ("80", "60")  # the canvas stays
    options = support.task_row(placed.headers["X-Task-Id"])["options"]
    assert options["scale"] == "50%" and options["position"] == "50% 50%"  # center, as our options key it

    blue = cv2.imencode(".png", np.full((30, 30, 3), (255, 0, 0), np.uint8))[1].tobytes()  # BGR: blue
    backed = removebg(client, alice.key, {"image_file": photo, "bg_image_file": blue}, size="full")
    assert backed.status_code == 200 and backed.mimetype == "image/jpeg"  # auto: nothing stays transparent
    corner = decode(backed.data)[2, 2]
    assert corner[0] > 200 and corner[2] < 60  # the background image shows where the ground was


@pytest.mark.stack
def test_removebg_default_size_is_its_preview(alice_app, alice, worker_factory):
    worker_factory()
    client = alice_app.test_client()
    big = disc_photo(800, 1000, 200)  # 0.8 MP
    preview = removebg(client, alice.key, {"image_file": big})  # no size: remove.bg's default, preview
    assert preview.status_code == 200, preview.get_json()
    width, height = int(preview.headers["X-Width"]), int(preview.headers["X-Height"])
    assert width * height <= 250_000 and abs(width / height - 1.25) < 0.02
    full = removebg(client, alice.key, {"image_file": big}, size="full")
    assert (full.headers["X-Width"], full.headers["X-Height"]) == ("1000", "800")


def test_a_wrong_method_on_removebgs_path_is_answered_in_json(clean_state):
    answer = create_app({"TESTING": True}).test_client().get("/v1.0/removebg")
    assert answer.status_code == 405 and answer.get_json()["error"]["code"] == "method_not_allowed"
    wrong = create_app({"TESTING": True}).test_client().delete("/v1.0/removebg")  # no CSRF check on keyed paths
    assert wrong.status_code == 405 and wrong.get_json()["error"]["code"] == "method_not_allowed"
