"""Re-rendering a finished task with other options, from its kept raw matte, without the model:
POST /api/v1/tasks/<id>/render, against real Redis, PostgreSQL and a real worker."""

from __future__ import annotations

import io
import threading

import cv2
import numpy as np
import pytest

from cvunet_matting import db
from cvunet_matting.config import get_settings
from cvunet_matting.db import reads
from cvunet_matting.services import rerendering
from cvunet_matting.storage.files import Storage, raw_matte_path
from tests import support

pytestmark = [pytest.mark.services, pytest.mark.stack]


@pytest.fixture
def made(app, alice, worker_factory):
    """Alice's finished cut-out of a bright disc (a PNG with alpha), made by a real worker."""
    worker_factory()
    rgb = np.full((60, 80, 3), 25, np.uint8)
    cv2.circle(rgb, (40, 30), 18, (240, 240, 240), -1)
    photo = cv2.imencode(".png", cv2.add(rgb, support.noise((60, 80, 3), 3) // 10))[1].tobytes()
    client = support.user_client(app, alice, signed_in=False)
    task_id = upload(client, photo, "disc.png").get_json()["task_id"]
    support.wait_task(task_id, "success")
    client.photo = photo
    return client, task_id


def upload(client, photo: bytes, name: str):
    return client.post("/api/v1/images", data={"file": (io.BytesIO(photo), name)}, content_type="multipart/form-data")


def row_of(task_id: str) -> dict:
    with db.transaction() as cur:
        return reads.get_task(cur, task_id)


def path_of(task_id: str):
    return get_settings().data_dir / row_of(task_id)["output_path"]


def render(client, task_id: str, **form):
    return client.post(f"/api/v1/tasks/{task_id}/render", data=form)


def test_a_finished_task_renders_again_with_other_options_into_a_new_task(made, alice):
    client, old_id = made
    old_file = path_of(old_id)
    before = old_file.read_bytes()
    assert raw_matte_path(old_file).exists()  # the worker kept the model's matte beside its result

    answer = render(client, old_id, format="jpg", bg_color="#102030", erode="1")
    assert answer.status_code == 201, answer.get_json()
    new = answer.get_json()
    assert (
        new["state"] == "success" and new["task_id"] != old_id and answer.headers["Location"].endswith(new["task_id"])
    )
    assert (new["width"], new["height"]) == (80, 60) and new["filename"] == "disc.png"
    row = row_of(new["task_id"])
    assert row["owner_id"] == alice.id and row["worker"] == "web" and row["options"]["format"] == "jpg"
    assert row["confidence"] == row_of(old_id)["confidence"]  # the same raw matte, the same score
    jpeg = client.get(new["result_url"], buffered=True)
    assert jpeg.status_code == 200 and jpeg.mimetype == "image/jpeg"
    pixels = cv2.imdecode(np.frombuffer(jpeg.data, np.uint8), cv2.IMREAD_COLOR)
    assert abs(int(pixels[2, 2, 0]) - 0x30) < 8 and abs(int(pixels[2, 2, 2]) - 0x10) < 8  # the new colour (BGR)
    assert old_file.read_bytes() == before and row_of(old_id)["state"] == "success"  # the old one stays
    listed = client.get("/api/v1/tasks").get_json()["tasks"]
    assert [t["task_id"] for t in listed][:2] == [new["task_id"], old_id]  # in the history, newest first

    # The new task keeps the matte too: rendered again with the first options, it is the first result.
    first_options = render(client, new["task_id"])
    assert first_options.status_code == 201
    assert path_of(first_options.get_json()["task_id"]).read_bytes() == before

    # The same photo again: the worker reuses the result, and copies its raw matte with it.
    reused_id = upload(client, client.photo, "again.png").get_json()["task_id"]
    assert support.wait_task(reused_id, "success")["reused"]
    assert raw_matte_path(path_of(reused_id)).read_bytes() == raw_matte_path(old_file).read_bytes()
    assert render(client, reused_id, format="webp").status_code == 201


def test_a_render_names_its_source_in_its_json_and_links_it_on_its_page_while_visible(made, app, alice):
    client, old_id = made
    new_id = render(client, old_id, erode="1").get_json()["task_id"]
    assert row_of(new_id)["rendered_from"] == row_of(old_id)["id"] and row_of(old_id)["rendered_from"] is None
    assert client.get(f"/api/v1/tasks/{new_id}").get_json()["rendered_from"] == old_id
    assert client.get(f"/api/v1/tasks/{old_id}").get_json()["rendered_from"] is None
    browser = support.user_client(app, alice)
    page = browser.get(f"/tasks/{new_id}").get_data(as_text=True)
    assert 'id="task-source"' in page and f'href="/tasks/{old_id}"' in page and "disc.png" in page
    assert 'id="task-source"' not in browser.get(f"/tasks/{old_id}").get_data(as_text=True)
    assert client.delete(f"/api/v1/tasks/{old_id}").status_code == 200
    page = browser.get(f"/tasks/{new_id}").get_data(as_text=True)
    assert "no longer available" in page and f'href="/tasks/{old_id}"' not in page  # gone: named, not linked
    assert client.get(f"/api/v1/tasks/{new_id}").get_json()["rendered_from"] == old_id


def test_a_render_is_reused_by_the_owners_identical_upload_and_no_one_elses(made, app):
    client, old_id = made
    assert row_of(old_id)["model_version"]  # the worker records which model made the matte
    rendered = render(client, old_id, format="jpg", erode="1").get_json()
    row = row_of(rendered["task_id"])
    assert row["idem_key"] and row["model_version"] == row_of(old_id)["model_version"]
    form = {"file": (io.BytesIO(client.photo), "again.png"), "format": "jpg", "erode": "1"}
    again = client.post("/api/v1/images", data=form, content_type="multipart/form-data").get_json()["task_id"]
    reused = support.wait_task(again, "success")
    assert reused["reused"] and reused["idem_key"] == row["idem_key"]  # a copy of the render: no model run
    assert path_of(again).read_bytes() == path_of(rendered["task_id"]).read_bytes()
    assert raw_matte_path(path_of(again)).exists()  # and the copy can be rendered again in turn
    stranger = support.user_client(app, support.make_user(prefix="eve"), signed_in=False)
    form = {"file": (io.BytesIO(client.photo), "mine.png"), "format": "jpg", "erode": "1"}
    theirs = stranger.post("/api/v1/images", data=form, content_type="multipart/form-data").get_json()["task_id"]
    assert not support.wait_task(theirs, "success")["reused"]  # keys are per owner, renders' too


def test_a_strangers_task_is_not_found_and_bad_options_are_refused(made, app):
    client, task_id = made
    stranger = support.user_client(app, support.make_user(prefix="mallory"), signed_in=False)
    answer = render(stranger, task_id, format="webp")
    assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"
    for form, code in (
        ({"erode": "65"}, "bad_option"),
        ({"format": "gif"}, "bad_option"),
        ({"bg_color": "nope"}, "bad_option"),
        ({"alpha-threshold": "9"}, "unknown_field"),
    ):
        answer = render(client, task_id, **form)
        assert answer.status_code == 400 and answer.get_json()["error"]["code"] == code, form
    assert render(client, "not-an-id").status_code == 400
    as_json = client.post(f"/api/v1/tasks/{task_id}/render", json={"format": "jpg"})  # would be read as no options
    assert as_json.status_code == 400 and as_json.get_json()["error"]["code"] == "bad_request"
    assert client.get("/api/v1/tasks").get_json()["total"] == 1  # nothing was made by any of them


def test_a_task_whose_matte_is_gone_answers_410(made):
    client, task_id = made
    raw_matte_path(path_of(task_id)).unlink()  # made before mattes were kept, or removed
    answer = render(client, task_id, format="webp")
    assert answer.status_code == 410 and answer.get_json()["error"]["code"] == "no_matte"
    assert "raw matte" in answer.get_json()["error"]["message"]
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET expired_at = now() WHERE id = %s", (task_id,))
    answer = render(client, task_id)
    assert answer.status_code == 410 and answer.get_json()["error"]["code"] == "expired"


def test_a_render_counts_against_the_owners_quota(app, worker_factory):
    worker_factory()
    capped = support.make_user(prefix="capped", max_per_day=2)
    client = support.user_client(app, capped, signed_in=False)
    photo = support.png_bytes(41)
    task_id = upload(client, photo, "a.png").get_json()["task_id"]
    support.wait_task(task_id, "success")
    assert render(client, task_id, format="webp").status_code == 201  # the day's second file
    over = render(client, task_id, format="jpg")
    assert (
        over.status_code == 429 and over.get_json()["error"]["code"] == "quota_exceeded" and over.headers["Retry-After"]
    )
    assert client.get("/api/v1/tasks").get_json()["total"] == 2
    folders = (Storage(get_settings().data_dir).outputs / "images").iterdir()
    assert len(list(folders)) == 2  # the refused render left no file


def test_renders_beyond_the_slots_are_told_to_come_back(made, app, alice, monkeypatch):
    client, task_id = made
    renders = app.extensions["cvunet.renders"]
    assert renders.slots == get_settings().renders == 2  # the default
    entered, release = threading.Barrier(3), threading.Event()
    real = rerendering.render

    def slow(*args, **kwargs):
        entered.wait(30)
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(rerendering, "render", slow)
    answers = []
    clients = [support.user_client(app, alice, signed_in=False) for _ in range(2)]  # one per thread
    threads = [threading.Thread(target=lambda c=c: answers.append(render(c, task_id))) for c in clients]
    for thread in threads:
        thread.start()
    entered.wait(30)  # both slots are held now
    busy = render(client, task_id)
    release.set()
    for thread in threads:
        thread.join(60)
    assert busy.status_code == 503 and busy.get_json()["error"]["code"] == "busy" and busy.headers["Retry-After"] == "1"
    assert sorted(a.status_code for a in answers) == [201, 201]
    monkeypatch.setattr(rerendering, "render", real)
    assert render(client, task_id).status_code == 201  # the slots are free again
