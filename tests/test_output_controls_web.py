"""The output controls through the API, a real worker and the re-render: crop, size, placement and a
background image reach the result; a background upload is stored as inputs are, checked as they are,
kept while a task names it; an empty matte asked to crop fails that image as `empty_subject`."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from cvunet_matting import db
from cvunet_matting.config import get_settings
from cvunet_matting.db import reads
from cvunet_matting.storage.files import Storage, sha256_bytes
from tests import support

pytestmark = [pytest.mark.services, pytest.mark.stack]

BEHIND = (20, 180, 60)  # the background image's colour (RGB)


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))[1].tobytes()


def disc_photo(seed: int = 3) -> bytes:
    """A bright disc (centre 50,40; radius 18) on a dark ground: the tiny model's matte is the brightness."""
    rgb = np.full((80, 100, 3), 10, np.uint8)
    cv2.circle(rgb, (50, 40), 18, (245, 245, 245), -1)
    return png(cv2.add(rgb, support.noise((80, 100, 3), seed) // 40))


def background() -> bytes:
    return png(np.full((30, 30, 3), BEHIND, np.uint8))


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


def post(client, path: str, files: dict, **form):
    body = {name: (io.BytesIO(data), f"{name}.png") for name, data in files.items()} | form
    return client.post(path, data=body, content_type="multipart/form-data")


def row_of(task_id: str) -> dict:
    with db.transaction() as cur:
        return reads.get_task(cur, task_id)


@pytest.fixture
def client(app, alice, worker_factory):
    worker_factory()
    return support.user_client(app, alice, signed_in=False)


def test_an_upload_cropped_shrunk_and_flattened_onto_a_background_image(client):
    behind = background()
    answer = post(
        client,
        "/api/v1/images",
        {"file": disc_photo(), "bg_image": behind},
        format="jpg",
        crop="true",
        crop_margin="4px",
        size="30px",
    )
    assert answer.status_code == 202, answer.get_json()
    task_id = answer.get_json()["task_id"]
    row = support.wait_task(task_id)
    assert "alpha_url" not in client.get(f"/api/v1/tasks/{task_id}").get_json()  # flattened: no alpha to offer
    key = sha256_bytes(behind)
    assert row["options"]["bg_image"] == key and row["options"]["crop"] is True
    assert Storage(get_settings().data_dir).read_input(key) == behind  # stored as inputs are
    task = client.get(f"/api/v1/tasks/{task_id}").get_json()
    assert max(task["width"], task["height"]) == 30 and abs(task["width"] - task["height"]) <= 1  # the disc's box
    pixels = decode(client.get(task["result_url"], buffered=True).data)
    assert pixels.shape[2] == 3  # flattened
    corner = pixels[0, 0, ::-1].astype(int)  # in the 4 px margin: the background image
    assert np.abs(corner - BEHIND).max() < 20
    centre = pixels[pixels.shape[0] // 2, pixels.shape[1] // 2].astype(int)
    assert centre.min() > 200  # the disc


def test_a_batch_with_a_background_and_a_crop_fails_only_the_empty_image(client):
    blank = png(np.zeros((40, 40, 3), np.uint8))  # the tiny model finds nothing in black
    answer = client.post(
        "/api/v1/batches",
        data={
            "files": [(io.BytesIO(disc_photo(1)), "a.png"), (io.BytesIO(blank), "blank.png")],
            "bg_image": (io.BytesIO(background()), "behind.png"),
            "crop": "1",
        },
        content_type="multipart/form-data",
    )
    assert answer.status_code == 202, answer.get_json()
    batch_id = answer.get_json()["batch_id"]

    def finished():
        body = client.get(f"/api/v1/batches/{batch_id}").get_json()
        return body if body["state"] == "done" else None

    body = support.wait_for(finished, 60, "batch not done")
    by_name = {item["filename"]: item for item in body["items"]}
    assert by_name["a.png"]["state"] == "success"
    assert by_name["blank.png"]["state"] == "failure" and by_name["blank.png"]["error_code"] == "empty_subject"
    assert "no subject" in by_name["blank.png"]["error"]


def test_a_rerender_takes_the_new_controls_and_a_background_upload(client):
    task_id = post(client, "/api/v1/images", {"file": disc_photo()}).get_json()["task_id"]
    support.wait_task(task_id)
    answer = post(client, f"/api/v1/tasks/{task_id}/render", {"bg_image": background()}, crop="on", format="png")
    assert answer.status_code == 201, answer.get_json()
    new = answer.get_json()
    assert (new["width"], new["height"]) != (100, 80) and abs(new["width"] - new["height"]) <= 1
    pixels = decode(client.get(new["result_url"], buffered=True).data)
    assert pixels.ndim == 3 and pixels.shape[2] == 3  # flattened onto the image
    assert np.abs(pixels[0, 0, ::-1].astype(int) - BEHIND).max() < 30  # the disc's box corner: mostly behind
    assert "alpha_url" not in new
    again = client.post(f"/api/v1/tasks/{task_id}/render", data={"scale": "50%", "position": "0% 0%"})
    assert again.status_code == 201 and (again.get_json()["width"], again.get_json()["height"]) == (100, 80)
    assert "alpha_url" in again.get_json()  # moved, still transparent


def test_a_rerender_asked_to_crop_an_empty_matte_answers_422(client):
    blank = png(np.zeros((40, 40, 3), np.uint8))
    task_id = post(client, "/api/v1/images", {"file": blank}).get_json()["task_id"]
    support.wait_task(task_id)  # without a crop, an empty cut-out is a result
    answer = client.post(f"/api/v1/tasks/{task_id}/render", data={"crop": "true"})
    assert answer.status_code == 422 and answer.get_json()["error"]["code"] == "empty_subject"


def test_bad_backgrounds_and_canvas_options_are_refused_and_store_nothing(app, alice):
    client = support.user_client(app, alice, signed_in=False)
    for files, form, status, code in (
        ({"bg_image": b"not an image at all"}, {}, 415, "not_an_image"),
        ({"bg_image": background()}, {"bg_color": "red"}, 400, "bad_option"),
        ({}, {"bg_image": "0" * 64}, 400, "bad_option"),  # a key is no upload: another's file is not reachable
        ({}, {"crop_margin": "600px", "crop": "true"}, 400, "bad_option"),
        ({}, {"size": "tiny"}, 400, "bad_option"),
        ({}, {"position": "left"}, 400, "bad_option"),
        ({"backdrop": background()}, {}, 400, "unknown_field"),
    ):
        answer = post(client, "/api/v1/images", {"file": disc_photo(), **files}, **form)
        assert answer.status_code == status and answer.get_json()["error"]["code"] == code, (files, form)
    assert client.get("/api/v1/tasks").get_json()["total"] == 0
    assert not Storage(get_settings().data_dir).inputs.exists() or not any(
        Storage(get_settings().data_dir).inputs.rglob("*")
    )


def test_a_background_is_kept_while_a_task_names_it(client, alice):
    behind = background()
    key = sha256_bytes(behind)
    first = post(client, "/api/v1/images", {"file": disc_photo(1), "bg_image": behind}).get_json()["task_id"]
    second = post(client, "/api/v1/images", {"file": disc_photo(2), "bg_image": behind}).get_json()["task_id"]
    support.wait_task(first)
    support.wait_task(second)
    storage = Storage(get_settings().data_dir)
    assert client.delete(f"/api/v1/tasks/{first}").status_code == 200
    assert storage.input_path(key).exists()  # the second task still reads it
    with db.transaction() as cur:
        assert reads.inputs_no_longer_used(cur, {key}) == set()
    assert client.delete(f"/api/v1/tasks/{second}").status_code == 200
    assert not storage.input_path(key).exists()  # the last one gone: so is the background
    assert row_of(second)["deleted_at"]
