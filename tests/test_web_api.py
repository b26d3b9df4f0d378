"""The web app through Flask's test client, against real Redis, PostgreSQL and Celery workers."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvunet_matting import db
from cvunet_matting.config import get_settings
from cvunet_matting.db import reads, writes
from cvunet_matting.pipeline.folder_listing import list_folder
from cvunet_matting.storage.files import Storage, alpha_path, raw_matte_path
from cvunet_matting.web import create_app
from cvunet_matting.webapp import alpha_matte
from tests import support
from tests.support import png_bytes

services = pytest.mark.services
SIZE = (48, 64)  # rows, columns


def truncated_png(seed: int = 99) -> bytes:
    data = png_bytes(seed)
    return data[: len(data) // 2]  # header intact: accepted at submit, refused by the worker


@pytest.fixture
def app(clean_state):
    return create_app({"TESTING": True, "READY_CACHE_SECONDS": 0})


@pytest.fixture
def user(database):
    return support.make_user()


@pytest.fixture
def client(app, user):
    """A signed-in user's browser session that also sends the user's API key to /api/v1."""
    client = support.user_client(app, user)
    client.user = user
    return client


def user_of(client) -> support.TestUser:
    return client.user


@pytest.fixture
def admin_client(app):
    return support.user_client(app, support.make_user(admin=True, prefix="admin"))


def upload(client, data: bytes, name: str = "photo.png", **form):
    body = {"file": (io.BytesIO(data), name), **form}
    return client.post("/api/v1/images", data=body, content_type="multipart/form-data")


def wait_task(client, task_id: str, states=("success",), timeout: float = 60) -> dict:
    def done():
        body = client.get(f"/api/v1/tasks/{task_id}").get_json()
        return body if body["state"] in states else None

    return support.wait_for(done, timeout, f"task {task_id} not in {states}")


def page_csrf(client, path: str = "/") -> str:
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def task_row(task_id: str) -> dict:
    with db.transaction() as cur:
        return reads.get_task(cur, task_id)


def result_of(task_id: str) -> Path:
    return get_settings().data_dir / task_row(task_id)["output_path"]


# ------------------------------------------------------------------ end to end with a worker


@pytest.mark.services
@pytest.mark.stack
def test_upload_poll_download_rgba_png(client, worker_factory):
    worker_factory()
    original = png_bytes(1)
    response = upload(client, original, "my cat.png")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert response.headers["Location"] == body["status_url"] == f"/api/v1/tasks/{body['task_id']}"
    status = wait_task(client, body["task_id"])
    assert status["attempts"] == 1 and (status["width"], status["height"]) == (SIZE[1], SIZE[0])

    result = client.get(status["result_url"] + "?download=1", buffered=True)
    assert result.status_code == 200 and result.mimetype == "image/png"
    assert 'attachment; filename="my cat-cutout.png"' in result.headers["Content-Disposition"]
    pixels = decode(result.data)
    assert pixels.shape == (*SIZE, 4)  # RGBA, same size as the upload

    alpha = decode(client.get(status["alpha_url"], buffered=True).data)
    assert alpha.shape == SIZE and np.array_equal(alpha, pixels[..., 3])
    assert client.get(status["input_url"], buffered=True).data == original

    page = client.get(status["view_url"]).get_data(as_text=True)
    # The page links the browser session's own routes (/page), never the API's (API keys only).
    result_page, alpha_page = (status[k].replace("/api/v1/", "/page/") for k in ("result_url", "alpha_url"))
    assert result_page in page and alpha_page in page and "checker" in page and "/api/v1/tasks" not in page
    session_only = support.user_client(client.application, user_of(client), signed_in=False)
    session_only.environ_base.pop("HTTP_AUTHORIZATION")
    support.sign_in(session_only, user_of(client))
    assert session_only.get(result_page, buffered=True).data == result.data
    assert session_only.get(status["result_url"]).status_code == 401


@pytest.mark.services
@pytest.mark.stack
def test_batch_with_broken_and_refused_files_completes_with_a_zip(client, worker_factory):
    worker_factory()
    files = [
        (io.BytesIO(png_bytes(2)), "a.png"),
        (io.BytesIO(png_bytes(3)), "b.png"),
        (io.BytesIO(truncated_png()), "broken.png"),
        (io.BytesIO(b"just some notes"), "notes.txt"),
    ]
    response = client.post("/api/v1/batches", data={"files": files}, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["total"] == 3
    assert [(r["filename"], r["code"]) for r in body["refused"]] == [("notes.txt", "not_an_image")]

    def finished():
        status = client.get(body["status_url"]).get_json()
        return status if status["state"] == "done" else None

    status = support.wait_for(finished, 90, "batch not done")
    # The refused upload stays in the batch, failed with its reason: its page and manifest say so.
    assert (status["total"], status["done"], status["failed"], status["pending"]) == (4, 2, 2, 0)
    broken = next(i for i in status["items"] if i["filename"] == "broken.png")
    assert broken["state"] == "failure" and "truncated" in broken["error"]
    notes = next(i for i in status["items"] if i["filename"] == "notes.txt")
    assert (notes["state"], notes["error_code"]) == ("failure", "refused") and notes["error"] == (
        body["refused"][0]["message"]
    )
    again = client.post(f"/api/v1/tasks/{notes['task_id']}/retry?force=1")  # nothing stored to run again
    assert again.status_code == 409 and "send it again" in again.get_json()["error"]["message"]

    archive = client.get(status["zip_url"], buffered=True)
    assert archive.status_code == 200 and archive.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.data)) as zf:
        assert sorted(zf.namelist()) == ["a.png", "b.png", "manifest.json"]
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["total"] == 4 and "notes.txt" in {i["filename"] for i in manifest["items"]}
    page = client.get(status["view_url"]).get_data(as_text=True)
    assert "Download ZIP" in page and "truncated" in page and "notes.txt" in page

    # Repair the stored input and retry the failed item: the batch reopens and its ZIP is rebuilt.
    key = task_row(broken["task_id"])["input_key"]
    (get_settings().data_dir / "inputs" / key[:2] / key).write_bytes(png_bytes(40))
    assert client.post(f"/api/v1/tasks/{broken['task_id']}/retry?force=1").status_code == 202
    status = support.wait_for(finished, 90, "batch not done after the retry")
    assert (status["done"], status["failed"]) == (3, 1)
    with zipfile.ZipFile(io.BytesIO(client.get(status["zip_url"], buffered=True).data)) as zf:
        assert sorted(zf.namelist()) == ["a.png", "b.png", "broken.png", "manifest.json"]
    # An operator whose ZIP was lost rebuilds it (README: finalize_batch with rebuild).
    from cvunet_matting.pipeline import batch_lifecycle

    stored_zip = get_settings().data_dir / support.batch_row(body["batch_id"])["zip_path"]
    stored_zip.unlink()
    assert batch_lifecycle.finalize(body["batch_id"])["finalized"] is False  # done: left alone
    assert batch_lifecycle.finalize(body["batch_id"], rebuild=True)["finalized"] is True
    assert stored_zip.is_file() and client.get(status["zip_url"], buffered=True).status_code == 200


@pytest.mark.services
@pytest.mark.stack
def test_history_shows_failure_reason_and_retry_requeues_it(client, worker_factory):
    original = png_bytes(4)
    task_id = upload(client, original, "flaky.png").get_json()["task_id"]
    # Damage the stored input before any worker runs: the first attempt fails for a known reason.
    stored = get_settings().data_dir / "inputs" / task_row(task_id)["input_key"][:2] / task_row(task_id)["input_key"]
    stored.write_bytes(original[: len(original) // 2])
    worker = worker_factory()
    wait_task(client, task_id, ("failure",))
    # The image's own failure is logged in a line, not as a worker error with a traceback.
    log = worker.log_path.read_text(errors="replace")
    assert "raised expected: ImageFailed" in log and "Traceback" not in log, log[-2000:]

    page = client.get("/history?state=failure").get_data(as_text=True)
    assert "flaky.png" in page and "truncated" in page

    # Refused for what it is: it would fail the same way, so a retry must be forced (storage repaired
    # under it, here, or a limit raised since).
    refused = client.post(f"/api/v1/tasks/{task_id}/retry")
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "refused_input"
    assert task_row(task_id)["state"] == "failure"
    stored.write_bytes(original)
    token = page_csrf(client, "/history")
    form = {"csrf_token": token, "next": "/history", "force": "1"}
    response = client.post(f"/tasks/{task_id}/retry", data=form)
    assert response.status_code == 302 and response.headers["Location"] == "/history"
    assert task_row(task_id)["state"] in {"pending", "started", "success"}
    assert wait_task(client, task_id)["state"] == "success"
    # Retrying a task that succeeded is refused, through the API too.
    again = client.post(f"/api/v1/tasks/{task_id}/retry")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "not_failed"


@pytest.mark.services
@pytest.mark.stack
def test_readyz_needs_a_worker_and_caches_the_worker_check(clean_state, worker_factory):
    fresh = create_app({"READY_CACHE_SECONDS": 0}).test_client()
    cached = create_app({"READY_CACHE_SECONDS": 600}).test_client()
    assert fresh.get("/healthz").get_json() == {"status": "ok"}
    for client in (fresh, cached):
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["failed"] == ["workers"]
    asked = time.monotonic()
    worker = worker_factory()
    response = fresh.get("/readyz")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["checks"] == {"redis": True, "postgres": True, "workers": True}
    # "No worker" is kept a second at most: asked again.
    time.sleep(max(0.0, asked + 1.1 - time.monotonic()))
    assert cached.get("/readyz").status_code == 200
    support.kill_group(worker)
    assert cached.get("/readyz").status_code == 200  # a worker count is kept READY_CACHE_SECONDS
    assert fresh.get("/readyz").status_code == 503


# ------------------------------------------------------------------ refusals and errors


@services
@pytest.mark.parametrize(
    ("name", "data", "form", "status", "code"),
    [
        ("empty.png", b"", {}, 400, "empty"),
        ("notes.txt", b"hello, not an image", {}, 415, "not_an_image"),
        ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>', {}, 415, "svg"),
        ("photo.png", png_bytes(5), {"format": "gif"}, 400, "bad_option"),
        ("photo.png", png_bytes(5), {"bg_color": "not-a-colour"}, 400, "bad_option"),
        ("photo.png", png_bytes(5), {"alpha_only": "maybe"}, 400, "bad_option"),
    ],
)
def test_bad_uploads_are_refused_with_json(client, name, data, form, status, code):
    response = upload(client, data, name, **form)
    assert response.status_code == status
    assert response.is_json and response.get_json()["error"]["code"] == code
    assert response.get_json()["error"]["message"]


@services
def test_missing_file_and_limits(clean_state, user):
    small = support.user_client(create_app({"CVUNET_MAX_PIXELS": 1000, "CVUNET_MAX_UPLOAD_MB": 1}), user)
    missing = small.post("/api/v1/images", data={"format": "png"}, content_type="multipart/form-data")
    assert missing.status_code == 400 and missing.get_json()["error"]["code"] == "no_file"
    over = upload(small, png_bytes(6))  # 48 x 64 = 3072 pixels > 1000
    assert over.status_code == 400 and over.get_json()["error"]["code"] == "too_many_pixels"
    assert "over the limit" in over.get_json()["error"]["message"]
    big = upload(small, b"\x89PNG\r\n\x1a\n" + bytes(1536 * 1024))
    assert big.status_code == 413 and big.get_json()["error"]["code"] == "too_large"
    # The same limit on the page's form is a friendly HTML page, not JSON nor a traceback.
    page = small.post("/", data={"files": (io.BytesIO(bytes(1536 * 1024)), "big.png")})
    assert page.status_code == 413 and page.mimetype == "text/html" and "1 MB" in page.get_data(as_text=True)
    # Under the size limit but with more parts than the form may hold: said so, not "larger than 1 MB".
    few = support.user_client(create_app({"CVUNET_MAX_UPLOAD_MB": 1, "MAX_FORM_PARTS": 5}), user)
    files = {"files": [(io.BytesIO(png_bytes(7)), f"{n}.png") for n in range(6)]}
    many = few.post("/api/v1/batches", data=files, content_type="multipart/form-data")
    assert many.status_code == 413 and many.get_json()["error"]["code"] == "too_large"
    assert many.get_json()["error"]["message"].startswith("the form has more than 5 parts (one per file or field)")


@services
def test_ids_are_validated_and_unknown_ones_are_404_json(client):
    unknown = "00000000-0000-4000-8000-000000000000"
    for path in ("/api/v1/tasks/not-a-uuid", "/api/v1/batches/12345/zip", "/api/v1/tasks/..%2F..%2Fetc/result"):
        response = client.get(path)
        assert response.status_code in {400, 404} and response.is_json, path
    assert client.get("/api/v1/tasks/not-a-uuid").get_json()["error"]["code"] == "bad_id"
    for path in (f"/api/v1/tasks/{unknown}", f"/api/v1/tasks/{unknown}/result", f"/api/v1/batches/{unknown}"):
        response = client.get(path)
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found", path
    assert client.get("/api/v1/nowhere").get_json()["error"]["code"] == "not_found"
    wrong_method = client.delete("/api/v1/images")
    assert wrong_method.status_code == 405 and wrong_method.is_json and "POST" in wrong_method.headers["Allow"]
    html = client.get("/tasks/not-a-uuid")
    assert html.status_code == 404 and html.mimetype == "text/html"


@services
def test_results_are_404_json_until_ready(client):
    body = upload(client, png_bytes(7)).get_json()  # no worker: it stays pending
    for what in ("result", "alpha"):
        response = client.get(f"/api/v1/tasks/{body['task_id']}/{what}")
        assert response.status_code == 404
        assert response.get_json()["error"] == {
            "code": "not_ready",
            "message": f"the {'result' if what == 'result' else 'alpha matte'} is not ready yet",
            "state": "pending",
        }
        assert int(response.headers["Retry-After"]) >= 0  # as its status would say: ask again later
    assert client.get(f"/api/v1/tasks/{body['task_id']}/input", buffered=True).data == png_bytes(7)
    files = {"files": [(io.BytesIO(png_bytes(8)), "x.png"), (io.BytesIO(png_bytes(9)), "y.png")]}
    batch = client.post("/api/v1/batches", data=files, content_type="multipart/form-data").get_json()
    response = client.get(f"/api/v1/batches/{batch['batch_id']}/zip")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_ready"
    assert int(response.headers["Retry-After"]) >= 0


@services
def test_declared_query_parameters_are_checked_and_download_stays_a_lenient_switch(client):
    files = {"files": [(io.BytesIO(png_bytes(s)), f"{s}.png") for s in (41, 42, 43)]}
    batch_url = client.post("/api/v1/batches", data=files, content_type="multipart/form-data").get_json()["status_url"]
    for query in ("offset=-1", "offset=x", "offset=2147483648", "limit=1001", "limit=", "limit=%EF%BC%91"):
        response = client.get(f"{batch_url}?{query}")
        assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_request", query
    page = client.get(f"{batch_url}?offset=1&limit=1").get_json()
    assert page["items_offset"] == 1 and len(page["items"]) == 1 and page["total"] == 3
    input_url = page["items"][0]["input_url"]
    for value, attached in (("1", True), ("true", True), ("yes", True), ("0", False), ("no", False), ("", False)):
        disposition = client.get(f"{input_url}?download={value}", buffered=True).headers["Content-Disposition"]
        assert disposition.startswith("attachment") is attached, value


def test_the_alpha_matte_is_taken_from_the_stored_cut_out(tmp_path):
    from cvunet_matting.errors import InputError
    from cvunet_matting.webapp.alpha_matte import alpha_png

    rgba = np.random.default_rng(5).integers(0, 256, (*SIZE, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "cut.png"), rgba)
    assert np.array_equal(decode(alpha_png(tmp_path / "cut.png")), rgba[..., 3])
    cv2.imwrite(str(tmp_path / "flat.png"), rgba[..., :3])
    with pytest.raises(InputError) as info:
        alpha_png(tmp_path / "flat.png")
    assert info.value.code == "not_found"


def test_a_stored_matte_follows_its_result_and_never_outlives_it(tmp_path, monkeypatch):
    from cvunet_matting.errors import InputError

    derivations = alpha_matte.Derivations(1)
    result, rgba = tmp_path / "cut.png", support.noise((*SIZE, 4), 6)
    cv2.imwrite(str(result), rgba)
    matte = derivations.matte(result)
    assert matte == alpha_path(result) and np.array_equal(decode(matte.read_bytes()), rgba[..., 3])
    os.utime(matte, ns=(0, 0))  # older than its result (written again): derived again, not served stale
    assert derivations.matte(result) == matte and matte.stat().st_mtime_ns >= result.stat().st_mtime_ns

    def unwritable(*args, **kwargs):
        raise OSError(28, "No space left on device")

    matte.unlink()
    with monkeypatch.context() as m:  # storage full: served from memory all the same, nothing half-written
        m.setattr(alpha_matte, "write_atomic", unwritable)
        assert decode(derivations.matte(result)).tolist() == rgba[..., 3].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.png"]

    real = alpha_matte.alpha_png

    def expired_meanwhile(path):  # retention removes the result (and finds no matte) during the derivation
        data = real(path)
        path.unlink()
        return data

    monkeypatch.setattr(alpha_matte, "alpha_png", expired_meanwhile)
    with pytest.raises(InputError) as info:
        derivations.matte(result)
    assert info.value.code == "not_found" and list(tmp_path.iterdir()) == []  # no matte left behind


@pytest.mark.services
@pytest.mark.stack
def test_the_alpha_matte_is_derived_once_then_served_from_its_stored_file(client, worker_factory, monkeypatch):
    derived = []
    real = alpha_matte.alpha_png
    monkeypatch.setattr(alpha_matte, "alpha_png", lambda path: derived.append(path) or real(path))
    worker_factory()
    status = wait_task(client, upload(client, png_bytes(31), "portrait.png").get_json()["task_id"])
    result = result_of(status["task_id"])
    cut_out = result.read_bytes()
    before = cv2.imencode(".png", decode(cut_out)[..., 3])[1].tobytes()  # what /alpha sent on every request

    first = client.get(status["alpha_url"], buffered=True)
    assert first.status_code == 200 and first.mimetype == "image/png" and first.data == before
    assert len(derived) == 1 and alpha_path(result).read_bytes() == before  # kept beside the result
    again = client.get(status["alpha_url"], buffered=True)
    page = client.get(status["alpha_url"].replace("/api/v1/", "/page/") + "?download=1", buffered=True)
    assert again.data == page.data == before and len(derived) == 1  # from the stored file: not decoded again
    assert page.headers["Content-Disposition"] == "attachment; filename=portrait-alpha.png"
    # A file on disk, so conditional requests work as for the other downloads (before: no ETag at all).
    assert again.headers["ETag"] and again.headers["Last-Modified"]
    cached = client.get(status["alpha_url"], headers={"If-None-Match": again.headers["ETag"]})
    assert cached.status_code == 304 and len(derived) == 1
    assert result.read_bytes() == cut_out  # the result itself is untouched
    beside = [result.name, alpha_path(result).name, raw_matte_path(result).name]  # the worker keeps the raw matte
    assert sorted(p.name for p in result.parent.iterdir()) == sorted(beside)


def finished_task(owner: support.TestUser, rgba: np.ndarray, name: str) -> str:
    """A task of `owner`'s finished with `rgba` as its PNG cut-out, written here (no worker)."""
    storage = Storage(get_settings().data_dir)
    task_id = uuid.uuid4()
    row = {
        "id": task_id,
        "batch_id": None,
        "filename": name,
        "input_key": storage.put_input(png_bytes(0)),
        "options": {},
        "output_path": f"outputs/images/{task_id}/{name}",
    }
    (storage.root / row["output_path"]).parent.mkdir(parents=True)
    cv2.imwrite(str(storage.root / row["output_path"]), rgba)
    with db.transaction() as cur:
        writes.create_tasks(cur, [row])
        cur.execute("UPDATE tasks SET state = 'success', finished_at = now() WHERE id = %s", (task_id,))
        writes.set_owner(cur, owner.id, task_ids=[task_id])
    return str(task_id)


@services
def test_alpha_mattes_derived_at_once_are_bounded_per_process(clean_state, user, monkeypatch):
    app = create_app({"TESTING": True, "CVUNET_ALPHA_DERIVATIONS": "2"})
    tasks = [finished_task(user, support.noise((*SIZE, 4), seed), f"t{seed}.png") for seed in range(6)]
    inside, release = threading.Semaphore(0), threading.Event()
    running, most = [0], [0]
    lock, real = threading.Lock(), alpha_matte.alpha_png

    def held(path):  # a derivation that lasts until the test lets it end
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        inside.release()
        release.wait(60)
        with lock:
            running[0] -= 1
        return real(path)

    def get(task_id):
        return app.test_client().get(f"/api/v1/tasks/{task_id}/alpha", headers=user.bearer, buffered=True)

    monkeypatch.setattr(alpha_matte, "alpha_png", held)  # WAIT_S stays the production default (2 s)
    with ThreadPoolExecutor(2) as pool:
        holding = [pool.submit(get, task_id) for task_id in tasks[:2]]
        assert inside.acquire(timeout=60) and inside.acquire(timeout=60)  # two derive at once
        busy = get(tasks[2])  # a third finds both slots taken for the whole default wait
        release.set()
        assert [f.result().status_code for f in holding] == [200, 200]
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert busy.get_json()["error"]["code"] == "busy" and busy.get_json()["error"]["message"]
    assert most[0] == 2 and not alpha_path(result_of(tasks[2])).exists()
    assert get(tasks[2]).status_code == 200  # a slot is free again

    # Waiting longer than a derivation lasts, a burst is queued: all answered, never more than two at once.
    release.clear()
    monkeypatch.setattr(alpha_matte, "WAIT_S", 60)
    with ThreadPoolExecutor(3) as pool:
        burst = [pool.submit(get, task_id) for task_id in tasks[3:]]
        assert inside.acquire(timeout=60) and inside.acquire(timeout=60)
        release.set()
        answers = [f.result() for f in burst]
    assert [a.status_code for a in answers] == [200, 200, 200] and most[0] == 2
    for seed, answer in enumerate(answers, start=3):
        assert np.array_equal(decode(answer.data), support.noise((*SIZE, 4), seed)[..., 3])


@services
def test_folder_submission_stays_inside_the_allowed_roots(admin_client, tmp_root):
    client = admin_client
    root = get_settings().allowed_roots[0]
    (root / "shoot").mkdir(parents=True, exist_ok=True)
    (root / "shoot" / "one.png").write_bytes(png_bytes(10))
    (root / "shoot" / "two.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    (root / "linked").mkdir(exist_ok=True)
    secret = tmp_root / "secret.png"
    secret.write_bytes(png_bytes(11))
    (root / "linked" / "escape.png").unlink(missing_ok=True)
    (root / "linked" / "escape.png").symlink_to(secret)

    def post(folder, **extra):
        return client.post("/api/v1/batches/folder", json={"folder": folder, **extra})

    ok = post("shoot", options={"format": "webp"})
    assert ok.status_code == 202 and ok.get_json()["state"] == "listing" and ok.get_json()["total"] is None
    list_folder(ok.get_json()["batch_id"])  # what the bookkeeping worker does
    listed = client.get(ok.headers["Location"]).get_json()
    assert listed["total"] == 2 and listed["state"] == "running"
    assert sorted(i["filename"] for i in listed["items"]) == ["one.png", "two.jpg"]
    assert post(str(root / "shoot")).status_code == 202
    for outside in ("/etc", "../../etc", str(root / ".." / "secret.png"), "shoot/../../"):
        response = post(outside)
        assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden_path", outside
        assert f"(CVUNET_ALLOWED_ROOTS: {root})" in response.get_json()["error"]["message"]  # where it may be
    assert post("linked").get_json()["error"]["code"] == "empty_folder"  # the symlink leads outside
    assert post("no-such-folder").status_code == 404
    assert post("shoot", options={"format": "bmp"}).get_json()["error"]["code"] == "bad_option"
    assert post("shoot", options={"alpha_only": "yes"}).status_code == 400
    typo = post("shoot", options={"alpha-threshold": 9})  # refused, not run with the default
    assert typo.status_code == 400 and typo.get_json()["error"]["code"] == "unknown_field"
    assert "'options.alpha-threshold'" in typo.get_json()["error"]["message"]
    top = client.post("/api/v1/batches/folder", json={"folder": "shoot", "format": "jpg"})
    assert top.status_code == 400 and "'format'" in top.get_json()["error"]["message"]
    assert client.post("/api/v1/batches/folder", data="folder=/etc").status_code == 400


@services
def test_unexpected_errors_never_show_a_traceback(clean_state, user):
    app = create_app({"TESTING": True})

    def boom():
        raise RuntimeError("secret internals")

    app.add_url_rule("/api/v1/boom", "api_boom", boom)
    app.add_url_rule("/boom", "boom", boom)
    client = support.user_client(app, user)
    api = client.get("/api/v1/boom")
    assert api.status_code == 500 and api.get_json()["error"]["code"] == "internal_error"
    page = client.get("/boom")
    text = page.get_data(as_text=True)
    assert page.status_code == 500 and page.mimetype == "text/html"
    assert "secret internals" not in text and "Traceback" not in text and "api" not in page.mimetype


# ------------------------------------------------------------------ auth, CSRF, pages


@services
def test_legacy_api_tokens_act_as_the_operator_and_a_page_session_never_does(clean_state):
    token_a, token_b = "a" * 40, "b" * 40
    app = create_app({"CVUNET_API_TOKENS": f"{token_a},{token_b}"})
    client = app.test_client()
    missing = upload(client, png_bytes(12))
    assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Bearer " + "c" * 40, "Basic " + token_a, "Bearer ", token_a):
        response = client.post(
            "/api/v1/images",
            data={"file": (io.BytesIO(png_bytes(12)), "a.png")},
            headers={"Authorization": header},
        )
        assert response.status_code == 401, header
    good = client.post(
        "/api/v1/images",
        data={"file": (io.BytesIO(png_bytes(12)), "a.png")},
        headers={"Authorization": f"Bearer {token_b}"},
    )
    assert good.status_code == 202
    status_url = good.get_json()["status_url"]
    assert client.get(status_url).status_code == 401
    assert client.get(status_url, headers={"Authorization": f"Bearer {token_a}"}).status_code == 200
    assert task_row(good.get_json()["task_id"])["owner_id"] is None  # the operator's
    assert client.get("/api/v1/openapi.json").status_code == 200  # the description stays public
    # The finding: a page's session cookie and its CSRF token passed the API's auth. No more.
    token = page_csrf(client, "/login")
    by_page = client.post(
        "/api/v1/images",
        data={"file": (io.BytesIO(png_bytes(13)), "b.png")},
        headers={"X-CSRF-Token": token},
    )
    assert by_page.status_code == 401
    assert client.get(status_url).status_code == 401  # a bare session cookie on a GET neither
    with pytest.raises(ValueError, match="32 characters"):
        create_app({"CVUNET_API_TOKENS": "short-token"})


@services
def test_html_form_posts_need_the_csrf_token(client):
    unknown = "00000000-0000-4000-8000-000000000000"
    for data in ({}, {"csrf_token": "forged"}):
        response = client.post(f"/tasks/{unknown}/retry", data=data)
        assert response.status_code == 403 and response.mimetype == "text/html"
        response = client.post("/", data={**data, "files": (io.BytesIO(png_bytes(14)), "a.png")})
        assert response.status_code == 403
    with db.transaction() as cur:
        assert reads.history(cur)[1] == 0  # nothing was submitted
    token = page_csrf(client)
    assert client.post(f"/tasks/{unknown}/retry", data={"csrf_token": token}).status_code == 404


@services
def test_form_upload_without_javascript(client):
    token = page_csrf(client)
    one = client.post("/", data={"csrf_token": token, "files": (io.BytesIO(png_bytes(15)), "a.png")})
    assert one.status_code == 302 and re.fullmatch(r"/tasks/[0-9a-f-]{36}", one.headers["Location"])
    two = client.post(
        "/",
        data={
            "csrf_token": token,
            "fill": "1",
            "bg_color": "#336699",
            "format": "jpg",
            "files": [(io.BytesIO(png_bytes(16)), "a.png"), (io.BytesIO(b"<svg></svg>"), "b.svg")],
        },
    )
    # One good image and one refused: the good one runs alone, the refusal is flashed.
    assert two.status_code == 302 and two.headers["Location"].startswith("/tasks/")
    page = client.get(two.headers["Location"]).get_data(as_text=True)
    assert "SVG images are not supported" in page
    task = task_row(two.headers["Location"].rsplit("/", 1)[1])
    chosen = {key: task["options"][key] for key in ("format", "bg_color", "alpha_only")}
    assert chosen == {"format": "jpg", "bg_color": [0x33, 0x66, 0x99], "alpha_only": False}


@services
@pytest.mark.parametrize(("error", "state"), [(errno.ENOSPC, "full"), (errno.EROFS, "read-only")])
def test_a_full_or_read_only_data_volume_is_a_503_with_retry_after_and_keeps_nothing(
    client, monkeypatch, caplog, error, state
):
    """The service's disk, not the request: said so (it was a 500 "something went wrong" and a traceback)."""
    from cvunet_matting.storage import files as storage

    def no_room(*args, **kwargs):
        raise OSError(error, os.strerror(error), "/data/inputs/ab/abcdef")

    monkeypatch.setattr(storage, "write_atomic", no_room)
    api = upload(client, png_bytes(28))
    assert api.status_code == 503 and api.headers["Retry-After"] == "60"
    assert api.get_json()["error"] == {
        "code": "storage_unavailable",
        "message": f"the service's storage is {state}: nothing was kept of this request; try again later",
    }
    form = client.post("/", data={"csrf_token": page_csrf(client), "files": (io.BytesIO(png_bytes(29)), "a.png")})
    assert form.status_code == 503 and form.mimetype == "text/html"
    assert "/data/inputs" not in api.get_data(as_text=True) + form.get_data(as_text=True)
    assert "Traceback" not in caplog.text and f"storage {state} on POST" in caplog.text
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM tasks")
        assert cur.fetchone()["n"] == 0


@services
def test_a_file_refused_on_arrival_offers_no_original(client):
    """Nothing was stored for it: its input was a 500 (no storage key), and its page a broken image."""
    files = [(io.BytesIO(png_bytes(30)), "a.png"), (io.BytesIO(b""), "empty.png")]
    batch = client.post("/api/v1/batches", data={"files": files}, content_type="multipart/form-data").get_json()
    refused = [r for r in support.rows_of(batch["batch_id"]) if r["filename"] == "empty.png"][0]
    status = client.get(f"/api/v1/tasks/{refused['id']}").get_json()
    assert status["state"] == "failure" and "input_url" not in status
    original = client.get(f"/api/v1/tasks/{refused['id']}/input")
    assert original.status_code == 404 and original.get_json()["error"]["code"] == "not_found"
    assert "refused on arrival" in original.get_json()["error"]["message"]
    page = client.get(f"/tasks/{refused['id']}")
    assert page.status_code == 200 and 'alt="original image"' not in page.get_data(as_text=True)


@services
def test_the_form_names_the_first_refused_files_and_counts_the_rest(client):
    """Forty files the form refuses: five are named, the rest counted. One flash each (they wait in the
    session cookie) grew the cookie with every file, past the 4 KB browsers keep, sign-in and all."""
    token = page_csrf(client)
    files = [(io.BytesIO(b"<svg></svg>"), f"logo-{n:02}.svg") for n in range(40)]
    refused = client.post("/", data={"csrf_token": token, "files": files})
    assert refused.status_code == 302
    cookie = refused.headers["Set-Cookie"].split(";", 1)[0]
    assert len(cookie) < 4000, len(cookie)
    page = client.get(refused.headers["Location"]).get_data(as_text=True)
    assert "logo-04.svg" in page and "logo-05.svg" not in page and "… and 35 more files refused." in page


@services
def test_pages_render_and_reference_nothing_outside(client):
    index = client.get("/")
    html = index.get_data(as_text=True)
    assert index.status_code == 200 and 'id="dropzone"' in html and 'name="csrf_token"' in html
    assert "Content-Security-Policy" in index.headers
    past_the_end = client.get("/history?state=failure&page=3")  # no failures yet: one (empty) page
    assert past_the_end.status_code == 302 and past_the_end.headers["Location"] == "/history?page=1&state=failure"
    for path in ("/static/style.css", "/static/app.js", "/history", "/history?state=failure&page=1"):
        response = client.get(path)
        assert response.status_code == 200, path
        body = response.get_data(as_text=True)
        assert not re.search(r"(src|href)=\"https?://|url\(\s*['\"]?https?://|fetch\(\s*['\"]https?://", body), path
    assert "X-CSRF-Token" in client.get("/static/app.js").get_data(as_text=True)


@services
def test_metrics_count_requests_and_read_queue_and_states(admin_client):
    client = admin_client
    upload(client, png_bytes(17))  # no worker: one message waits, one task pending
    client.get("/healthz")
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'cvunet_http_requests_total{endpoint="/healthz",method="GET",status="200"} 2.0' in text
    assert 'cvunet_http_requests_total{endpoint="/api/v1/images",method="POST",status="202"} 1.0' in text
    assert "cvunet_http_request_seconds_bucket" in text
    assert "cvunet_queue_length 1.0" in text
    assert 'cvunet_tasks{state="pending"} 1.0' in text


@services
def test_made_up_methods_share_one_metrics_label(admin_client):
    """Each method a client invents was a new series: anyone could grow /metrics without bound."""
    for i in range(3):
        assert admin_client.open("/", method=f"X{i:06d}").status_code == 405
    text = admin_client.get("/metrics").get_data(as_text=True)
    assert "X000001" not in text
    assert 'cvunet_http_requests_total{endpoint="<unmatched>",method="other",status="405"} 3.0' in text


# ------------------------------------------------------------------ the web process itself


def test_the_largest_default_batch_fits_in_one_form_with_every_option():
    """A form holds MAX_FORM_PARTS parts: the default quota's largest batch, each option and the CSRF
    token must fit, or that batch would be refused as too large (413) before its quota was read."""
    from cvunet_matting.accounts.users import DEFAULT_QUOTAS
    from cvunet_matting.webapp.inputs import OPTION_FIELDS

    parts = create_app({"TESTING": True}).config["MAX_FORM_PARTS"]
    assert parts >= DEFAULT_QUOTAS["max_batch"] + len(OPTION_FIELDS) + 1


def test_secret_key_is_created_once_and_shared(tmp_path):
    first = create_app({"CVUNET_SECRET_KEY": "", "CVUNET_DATA_DIR": str(tmp_path)})
    second = create_app({"CVUNET_SECRET_KEY": "", "CVUNET_DATA_DIR": str(tmp_path)})
    key_file = tmp_path / "secret_key"
    assert first.secret_key == second.secret_key == key_file.read_text().strip()
    assert len(first.secret_key) >= 32 and key_file.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no temp file left behind


@services
def test_the_web_process_never_loads_the_model(clean_state):
    script = textwrap.dedent(
        """
        import io, json, sys
        from cvunet_matting.web import create_app
        client = create_app().test_client()
        data = open(sys.argv[1], "rb").read()
        r = client.post("/api/v1/images", data={"file": (io.BytesIO(data), "a.png")})
        assert r.status_code == 202, r.data
        codes = [client.get(p).status_code for p in
                 ("/", "/history", "/healthz", "/metrics", "/api/v1/openapi.json", r.json["status_url"])]
        print(json.dumps({"codes": codes, "onnxruntime": "onnxruntime" in sys.modules,
                          "model": "cvunet_matting.model.session" in sys.modules}))
        """
    )
    image = Path(get_settings().data_dir) / "probe.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(png_bytes(18))
    env = {**os.environ, "CVUNET_AUTH": "single-user"}  # no user to sign in as in that process
    done = subprocess.run(
        [sys.executable, "-c", script, str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=support.REPO,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"codes": [200, 200, 200, 200, 200, 200], "onnxruntime": False, "model": False}


@services
def test_metrics_in_prometheus_multiprocess_mode(clean_state, tmp_path):
    script = textwrap.dedent(
        """
        from cvunet_matting.web import create_app
        client = create_app().test_client()
        client.get("/healthz")
        print(client.get("/metrics").get_data(as_text=True))
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "CVUNET_AUTH": "single-user"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert 'cvunet_http_requests_total{endpoint="/healthz",method="GET",status="200"} 1.0' in done.stdout
    assert "cvunet_queue_length 0.0" in done.stdout
    assert any(tmp_path.glob("counter_*.db"))  # the values went through the shared files


@services
def test_a_misspelt_option_or_a_second_file_is_refused_not_ignored(client):
    typo = upload(client, png_bytes(24), **{"alpha-threshold": "64"})
    assert typo.status_code == 400 and typo.get_json()["error"]["code"] == "unknown_field"
    assert "'alpha-threshold'" in typo.get_json()["error"]["message"]
    assert "alpha_threshold" in typo.get_json()["error"]["message"]  # the right name, for the caller to fix
    two = {"file": [(io.BytesIO(png_bytes(25)), "a.png"), (io.BytesIO(png_bytes(26)), "b.png")]}
    second = client.post("/api/v1/images", data=two, content_type="multipart/form-data")
    assert second.status_code == 400 and second.get_json()["error"]["code"] == "one_file"
    wrong_field = {"file": [(io.BytesIO(png_bytes(27)), "a.png")]}
    batch = client.post("/api/v1/batches", data=wrong_field, content_type="multipart/form-data")
    assert batch.status_code == 400 and "'files'" in batch.get_json()["error"]["message"]
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM tasks")
        assert cur.fetchone()["n"] == 0  # nothing was stored for any of them


@services
def test_upload_names_are_never_paths(client):
    body = upload(client, png_bytes(19), "../../../etc/evil name.png").get_json()
    row = task_row(body["task_id"])
    assert row["filename"] == "../../../etc/evil name.png"  # kept for display only
    assert row["output_path"] == f"outputs/images/{body['task_id']}/evil name.png"
    page = client.get(f"/tasks/{body['task_id']}").get_data(as_text=True)
    assert "../../../etc/evil name.png" in page and "<script" not in page.split("</head>")[1]
    downloaded = client.get(f"/api/v1/tasks/{body['task_id']}/input?download=1", buffered=True)
    assert downloaded.headers["Content-Disposition"] == 'attachment; filename="evil name.png"'


@services
def test_unicode_names_are_kept_and_downloadable(client, worker_factory):
    name = "Фото 照片 Ünïcode.png"
    body = upload(client, png_bytes(23), name).get_json()
    row = task_row(body["task_id"])
    assert row["filename"] == name
    assert row["output_path"] == f"outputs/images/{body['task_id']}/Фото 照片 Ünïcode.png"
    worker_factory()
    wait_task(client, body["task_id"])
    result = client.get(f"/api/v1/tasks/{body['task_id']}/result?download=1", buffered=True)
    assert result.status_code == 200 and decode(result.data).shape[2] == 4
    # Non-ASCII names travel as RFC 5987 filename* with an ASCII fallback.
    assert "filename*=UTF-8''%D0%A4%D0%BE%D1%82%D0%BE" in result.headers["Content-Disposition"]


@services
def test_unfinished_work_tells_clients_when_to_poll(client, worker_factory):
    submitted = upload(client, png_bytes(29))
    task_url = submitted.get_json()["status_url"]
    batch = client.post(
        "/api/v1/batches", data={"files": [(io.BytesIO(png_bytes(31)), "b.png")]}, content_type="multipart/form-data"
    )
    batch_url = batch.get_json()["status_url"]
    # No history yet: poll in a second (in the body too), or ask the wait URL instead.
    assert submitted.headers["Retry-After"] == batch.headers["Retry-After"] == "1"
    assert submitted.get_json()["wait_url"] == f"{task_url}?wait=30"
    assert client.get(task_url).headers["Retry-After"] == "1"  # no worker yet: still pending
    assert client.get(batch_url).get_json()["poll_after_s"] == 1.0
    worker_factory()
    wait_task(client, submitted.get_json()["task_id"])
    support.wait_for(lambda: client.get(batch_url).get_json()["state"] == "done", 60, "batch done")
    assert "Retry-After" not in client.get(task_url).headers
    assert "Retry-After" not in client.get(batch_url).headers


def test_flask_settings_come_from_prefixed_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CVUNET_FLASK_SESSION_COOKIE_SECURE", "true")
    assert create_app({"CVUNET_DATA_DIR": str(tmp_path)}).config["SESSION_COOKIE_SECURE"] is True
