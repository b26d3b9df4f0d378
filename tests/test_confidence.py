"""The confidence score (image/confidence.py): from the raw matte, on the task's row, JSON and pages."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from cvunet_matting import db
from cvunet_matting.image.confidence import DOUBTFUL, confidence, is_doubtful
from tests import support
from tests.support import png_bytes


def disc(level: int, size: tuple[int, int] = (300, 400), radius: int = 100, rim: float = 4) -> np.ndarray:
    """A matte: a disc at `level` inside, a soft rim `rim` px wide, 0 outside."""
    height, width = size
    distance = np.hypot(*np.mgrid[:height, :width] - np.array([height / 2, width / 2])[:, None, None])
    return np.uint8(level * np.clip((radius - distance) / rim + 0.5, 0, 1) + 0.5)


def test_a_sure_matte_scores_1_whatever_its_soft_outline():
    assert confidence(disc(255)) == 1.0
    assert confidence(disc(255, rim=8)) == 1.0  # a softer outline (hair), still within the band


def test_a_subject_left_see_through_inside_scores_low():
    see_through = disc(180)  # the close-up cat's coat at 0.7
    assert confidence(see_through) < 0.2 < DOUBTFUL
    patched = disc(255)
    patched[120:180, 170:230] = 180  # a see-through patch inside a sure subject: a little doubt
    assert DOUBTFUL < confidence(patched) < 1.0


def test_a_haze_over_the_background_far_from_the_subject_is_doubt():
    hazy = disc(255)
    hazy[:40] = np.maximum(hazy[:40], 90)  # a band of faint background kept at the top, far from the disc
    assert confidence(hazy) < confidence(disc(255))


@pytest.mark.parametrize("level", [0, 40, 127])
def test_a_matte_with_no_subject_scores_0(level):
    assert confidence(np.full((200, 300), level, np.uint8)) == 0.0


@pytest.mark.parametrize("level", [128, 255])
def test_a_matte_that_is_the_whole_frame_scores_0(level):
    assert confidence(np.full((200, 300), level, np.uint8)) == 0.0


def test_a_large_matte_is_scored_on_its_small_copy_alike():
    small, large = disc(180), disc(180, (1500, 2000), 500, 20)
    assert abs(confidence(small) - confidence(large)) < 0.05
    assert confidence(disc(255, (1500, 2000), 500, 20)) == 1.0


def test_doubtful_is_below_the_threshold_and_never_for_a_missing_score():
    assert is_doubtful(DOUBTFUL - 0.01) and not is_doubtful(DOUBTFUL) and not is_doubtful(None)


# ------------------------------------------------------------------ on the row, the JSON and the pages


def finish_with(task_id: str, score: float | None) -> None:
    """What the worker's end event writes, for a task the test did not run."""
    with db.transaction() as cur:
        cur.execute("UPDATE tasks SET state = 'success', confidence = %s WHERE id = %s", (score, task_id))


@pytest.mark.services
def test_the_score_is_in_the_task_json_the_pages_and_the_batch_sorts_doubtful_first(app):
    alice = support.make_user(prefix="alice")
    api = app.test_client()
    files = {"files": [(io.BytesIO(png_bytes(40 + i)), f"img{i}.png") for i in range(4)]}
    batch = api.post("/api/v1/batches", data=files, content_type="multipart/form-data", headers=alice.bearer)
    batch_id = batch.get_json()["batch_id"]
    ids = [item["task_id"] for item in api.get(f"/api/v1/batches/{batch_id}", headers=alice.bearer).get_json()["items"]]
    scores = {ids[0]: 0.97, ids[1]: 0.6, ids[2]: None, ids[3]: 0.84}  # ids[2]: made before scores were kept
    for task_id, score in scores.items():
        finish_with(task_id, score)

    task = api.get(f"/api/v1/tasks/{ids[1]}", headers=alice.bearer).get_json()
    assert task["confidence"] == pytest.approx(0.6) and task["doubtful"] is True
    sure = api.get(f"/api/v1/tasks/{ids[0]}", headers=alice.bearer).get_json()
    assert sure["confidence"] == pytest.approx(0.97) and sure["doubtful"] is False
    unscored = api.get(f"/api/v1/tasks/{ids[2]}", headers=alice.bearer).get_json()
    assert unscored["confidence"] is None and unscored["doubtful"] is False
    items = api.get(f"/api/v1/batches/{batch_id}", headers=alice.bearer).get_json()["items"]
    got = [item["confidence"] for item in items]
    assert got[2] is None and [got[i] for i in (0, 1, 3)] == pytest.approx([0.97, 0.6, 0.84])
    assert [item["doubtful"] for item in items] == [False, True, False, True]

    pages = support.user_client(app, alice)
    page = pages.get(f"/tasks/{ids[1]}").get_data(as_text=True)
    assert 'id="task-confidence"' in page and "0.60" in page and "doubtful" in page
    assert 'id="task-confidence"' not in pages.get(f"/tasks/{ids[2]}").get_data(as_text=True)

    def order(query: str = "") -> list[str]:
        html = pages.get(f"/batches/{batch_id}{query}").get_data(as_text=True)
        return re.findall(r'<li class="tile" data-task-id="([0-9a-f-]+)"', html)

    assert order() == ids  # as submitted
    assert order("?sort=doubt") == [ids[1], ids[3], ids[0], ids[2]]  # least sure first, unscored last
    assert order("?sort=nonsense") == ids
    html = pages.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert 'id="sort-doubt"' in html and html.count("· doubtful") == 2
