"""The task page's "Adjust edges" routes with the signed-in session, against real Redis, PostgreSQL and a
real worker: the raw matte (GET /page/tasks/<id>/raw-matte) and the save (POST /page/tasks/<id>/render),
each for the owner alone, the save behind the pages' CSRF check. The browser side is in test_browser.py
and test_adjust_preview.py."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from cvunet_matting import db
from cvunet_matting.db import reads
from tests import support

pytestmark = [pytest.mark.services, pytest.mark.stack]


@pytest.fixture
def finished(app, alice, worker_factory):
    """Alice's signed-in pages and her cut-out of a bright disc, finished by a real worker."""
    worker_factory()
    rgb = np.full((60, 80, 3), 25, np.uint8)
    cv2.circle(rgb, (40, 30), 18, (240, 240, 240), -1)
    photo = cv2.imencode(".png", rgb)[1].tobytes()
    pages = support.user_client(app, alice)
    body = {"file": (io.BytesIO(photo), "disc.png")}
    task_id = pages.post("/page/images", data=body, headers=csrf(pages)).get_json()["task_id"]
    support.wait_task(task_id, "success")
    return pages, task_id


def csrf(client) -> dict:
    return {"X-CSRF-Token": support.page_csrf(client, "/history")}


def row_of(task_id: str) -> dict:
    with db.transaction() as cur:
        return reads.get_task(cur, task_id)


def reads_history() -> list:
    with db.transaction() as cur:
        return reads.history(cur)[0]


def test_the_owner_gets_the_raw_matte_and_saves_a_render_as_a_new_task(finished, alice):
    pages, task_id = finished
    html = pages.get(f"/tasks/{task_id}").get_data(as_text=True)
    assert 'id="adjust"' in html and f"/page/tasks/{task_id}/raw-matte" in html
    matte = pages.get(f"/page/tasks/{task_id}/raw-matte")
    assert matte.status_code == 200 and matte.mimetype == "image/png"
    assert cv2.imdecode(np.frombuffer(matte.data, np.uint8), cv2.IMREAD_UNCHANGED).shape == (60, 80)

    saved = pages.post(f"/page/tasks/{task_id}/render", data={"feather": "3", "format": "webp"}, headers=csrf(pages))
    assert saved.status_code == 201, saved.get_json()
    new = saved.get_json()
    assert new["task_id"] != task_id and new["state"] == "success"
    # The pages' own links: the session reaches them (the API's need a key).
    assert new["result_url"] == f"/page/tasks/{new['task_id']}/result" and new["view_url"] == f"/tasks/{new['task_id']}"
    result = pages.get(new["result_url"])
    assert result.status_code == 200 and result.mimetype == "image/webp"
    row = row_of(new["task_id"])
    assert row["owner_id"] == alice.id and row["options"]["feather"] == 3
    assert pages.get(f"/page/tasks/{new['task_id']}/raw-matte").status_code == 200  # adjustable in its turn


def test_the_save_needs_the_pages_csrf_token_and_good_options(finished):
    pages, task_id = finished
    assert pages.post(f"/page/tasks/{task_id}/render", data={"feather": "3"}).status_code == 403
    bad = pages.post(f"/page/tasks/{task_id}/render", data={"feather": "65"}, headers=csrf(pages))
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "bad_option"
    assert [r["id"] for r in reads_history()] == [row_of(task_id)["id"]]  # nothing new was made


def test_a_stranger_gets_404_and_a_missing_matte_410(app, finished):
    from cvunet_matting.config import get_settings
    from cvunet_matting.storage.files import raw_matte_path

    pages, task_id = finished
    stranger = support.user_client(app, support.make_user(prefix="stranger"))
    for answer in (
        stranger.get(f"/page/tasks/{task_id}/raw-matte"),
        stranger.post(f"/page/tasks/{task_id}/render", headers=csrf(stranger)),
    ):
        assert answer.status_code == 404 and answer.get_json()["error"]["code"] == "not_found"
    assert app.test_client().get(f"/page/tasks/{task_id}/raw-matte").status_code in {302, 401}  # signed out

    raw_matte_path(get_settings().data_dir / row_of(task_id)["output_path"]).unlink()
    gone = pages.get(f"/page/tasks/{task_id}/raw-matte")
    assert gone.status_code == 410 and gone.get_json()["error"]["code"] == "no_matte"
    assert "raw matte" in gone.get_json()["error"]["message"]
    assert 'id="adjust"' not in pages.get(f"/tasks/{task_id}").get_data(as_text=True)


def test_an_unfinished_task_has_no_panel_and_no_matte_yet(app, alice):
    pages = support.user_client(app, alice)  # no worker: the task stays queued
    body = {"file": (io.BytesIO(support.png_bytes(7)), "queued.png")}
    task_id = pages.post("/page/images", data=body, headers=csrf(pages)).get_json()["task_id"]
    assert 'id="adjust"' not in pages.get(f"/tasks/{task_id}").get_data(as_text=True)
    waiting = pages.get(f"/page/tasks/{task_id}/raw-matte")
    assert waiting.status_code == 404 and waiting.get_json()["error"]["code"] == "not_ready"
    refused = pages.post(f"/page/tasks/{task_id}/render", headers=csrf(pages))
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_done"
