"""A finished batch rendered again with other options into a new batch, on the bookkeeping worker
alone (no model worker runs while it renders): POST /api/v1/batches/<id>/render and
`cvunet-matting batch render`, against real Redis, PostgreSQL and real worker processes."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections import Counter

import cv2
import numpy as np
import pytest

from cvunet_matting import db
from cvunet_matting.accounts.users import OPERATOR
from cvunet_matting.config import get_settings
from cvunet_matting.db import reads, writes
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.rendering import raw_matte_png
from cvunet_matting.image.reuse_key import idem_key
from cvunet_matting.pipeline import dispatch, render_batch, render_job
from cvunet_matting.services import rerendering
from cvunet_matting.storage.files import Storage, raw_matte_path, write_atomic
from tests import support

pytestmark = [pytest.mark.services, pytest.mark.stack]


def photo(seed: int) -> bytes:
    """A bright disc on a dark ground, a little noisy (each seed another one)."""
    rgb = np.full((48, 64, 3), 25, np.uint8)
    cv2.circle(rgb, (32, 24), 14, (240, 240, 240), -1)
    return cv2.imencode(".png", cv2.add(rgb, support.noise((48, 64, 3), seed) // 10))[1].tobytes()


def upload_batch(client, files: list[tuple[bytes, str]]):
    data = {"files": [(io.BytesIO(content), name) for content, name in files]}
    return client.post("/api/v1/batches", data=data, content_type="multipart/form-data")


def render(client, batch_id: str, **form):
    return client.post(f"/api/v1/batches/{batch_id}/render", data=form)


def bookkeeper(tmp_root, name: str = "books@%h", **faults):
    """A bookkeeping worker only, as `cvunet-matting worker` starts it: no model, bookkeeping queue."""
    env = {"CVUNET_WORKER_ROLE": "bookkeeping", **faults}
    return support.start_worker(name, tmp_root / "logs", env, queues="bookkeeping")


@pytest.fixture
def finished(app, alice, worker_factory):
    """Alice's finished batch: three cut-outs made by a real worker and one file refused on arrival.
    The model worker is gone once it is done."""
    model_worker = worker_factory()
    client = support.user_client(app, alice, signed_in=False)
    files = [(photo(n), f"p{n}.png") for n in range(3)] + [(b"not an image", "broken.png")]
    answer = upload_batch(client, files)
    assert answer.status_code == 202, answer.get_json()
    batch_id = answer.get_json()["batch_id"]
    support.wait_batch(batch_id)
    support.kill_group(model_worker)
    return client, batch_id


def test_a_finished_batch_renders_again_into_a_new_batch_on_the_bookkeeper_alone(finished, alice, tmp_root):
    client, old_id = finished
    olds = support.rows_of(old_id)
    assert [r["state"] for r in olds] == ["success", "success", "success", "failure"]
    gone = get_settings().data_dir / olds[1]["output_path"]
    raw_matte_path(gone).unlink()  # a matte lost since: that image fails alone, the batch goes on
    before = {r["id"]: (get_settings().data_dir / r["output_path"]).read_bytes() for r in olds[::2][:1]}

    answer = render(client, old_id, format="jpg", bg_color="#102030", erode="1")
    assert answer.status_code == 202, answer.get_json()
    accepted = answer.get_json()
    new_id = accepted["batch_id"]
    assert new_id != old_id and accepted["total"] == 4 and answer.headers["Location"].endswith(new_id)
    assert support.redis().llen(get_settings().queue) == 0  # nothing for a model worker
    books = bookkeeper(tmp_root)
    try:
        batch = support.wait_batch(new_id, timeout=60)
    finally:
        support.kill_group(books)

    news = support.rows_of(new_id)
    assert [r["rendered_from"] for r in news] == [r["id"] for r in olds]  # the lineage, in the old order
    assert [r["state"] for r in news] == ["success", "failure", "success", "failure"]
    assert [r["error_code"] for r in news] == [None, "no_matte", None, "no_matte"]
    assert all(r["owner_id"] == alice.id for r in news) and support.batch_row(new_id)["owner_id"] == alice.id
    assert all(r["worker"].startswith("books@") for r in news if r["state"] == "success")
    assert {r["options"]["format"] for r in news} == {"jpg"} and news[0]["output_path"].endswith("p0.jpg")
    result = get_settings().data_dir / news[0]["output_path"]
    pixels = cv2.imdecode(np.frombuffer(result.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert abs(int(pixels[2, 2, 0]) - 0x30) < 8 and abs(int(pixels[2, 2, 2]) - 0x10) < 8  # the new colour (BGR)
    assert raw_matte_path(result).exists()  # the render keeps the matte: it can be rendered again in turn

    # Registered for reuse under the key a model worker would compute for the same upload and options.
    key = idem_key(
        olds[0]["input_key"], olds[0]["model_version"], OutputOptions.from_dict(news[0]["options"]), alice.id
    )
    with db.transaction() as cur:
        assert news[0]["idem_key"] == key and reads.find_result(cur, key)["task_id"] == news[0]["id"]

    status = client.get(f"/api/v1/batches/{new_id}").get_json()
    assert (status["done"], status["failed"], status["state"]) == (2, 2, "done") and "zip_url" in status
    assert "did not succeed" in status["items"][3]["error"] and "raw matte" in status["items"][1]["error"]
    task = client.get(f"/api/v1/tasks/{news[0]['id']}").get_json()
    assert task["rendered_from"] == str(olds[0]["id"])
    archive = zipfile.ZipFile(get_settings().data_dir / batch["zip_path"])
    assert sorted(archive.namelist()) == ["manifest.json", "p0.jpg", "p2.jpg"]
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["source"] == f"render:{old_id}"
    assert [i["rendered_from"] for i in manifest["items"]] == [str(r["id"]) for r in olds]
    # The old batch stays as it was.
    assert {r["id"]: (get_settings().data_dir / r["output_path"]).read_bytes() for r in olds[::2][:1]} == before
    assert support.batch_row(old_id)["state"] == "done"


def test_a_batch_render_is_refused_to_a_stranger_while_unfinished_and_for_bad_options(finished, app, alice):
    client, old_id = finished
    stranger = support.user_client(app, support.make_user(prefix="bob"), signed_in=False)
    assert render(stranger, old_id, erode="1").status_code == 404
    assert render(client, old_id, erode="lots").status_code == 400
    assert render(client, old_id, nonsense="1").status_code == 400
    assert render(client, "not-an-id").status_code in {400, 404}
    running = upload_batch(client, [(photo(9), "late.png")]).get_json()["batch_id"]  # no model worker left
    refused = render(client, running)
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_done"
    assert len(support.rows_of(old_id)) == 4 and support.redis().llen(get_settings().bookkeeping_queue) == 0


def test_a_batch_render_counts_toward_the_owners_quotas(finished, alice):
    client, old_id = finished
    with db.transaction() as cur:  # four files sent today already: four more do not fit
        writes.update_user(cur, alice.id, max_per_day=7)
    refused = render(client, old_id)
    assert refused.status_code == 429 and refused.get_json()["error"]["code"] == "quota_exceeded"
    assert support.redis().llen(get_settings().bookkeeping_queue) == 0


def test_the_cli_renders_a_batch_for_its_owner(finished, alice, tmp_root):
    _, old_id = finished
    done = support.run_cli("batch", "render", old_id, "--erode", "2", "--format", "webp")
    assert done.returncode == 0, done.stderr
    new_id = done.stdout.strip()
    books = bookkeeper(tmp_root)
    try:
        support.wait_batch(new_id, timeout=60)
    finally:
        support.kill_group(books)
    news = support.rows_of(new_id)
    assert [r["state"] for r in news] == ["success"] * 3 + ["failure"]
    assert all(r["owner_id"] == alice.id and r["options"]["erode"] == 2 for r in news)
    missing = support.run_cli("batch", "render", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode != 0 and "no batch" in missing.stderr


def test_a_batch_render_survives_its_worker_killed_with_an_image_in_hand(finished, tmp_root):
    client, old_id = finished
    new_id = render(client, old_id, feather="1").get_json()["batch_id"]
    slow = bookkeeper(tmp_root, "slowbooks@%h", CVUNET_TEST_DELAY_S="60")
    try:
        support.wait_until(
            lambda: any(r["state"] == "started" for r in support.rows_of(new_id)), 30, message="a render started"
        )
    finally:
        support.kill_group(slow)  # kill -9 of the whole worker, the image in hand unacknowledged
    books = bookkeeper(tmp_root)
    try:
        batch = support.wait_batch(new_id, timeout=90)
    finally:
        support.kill_group(books)
    news = support.rows_of(new_id)
    assert [r["state"] for r in news] == ["success"] * 3 + ["failure"]
    assert sorted(r["attempts"] for r in news[:3]) == [1, 1, 2]  # the killed one ran once more, nothing else
    assert all(r["worker"].startswith("books@") for r in news[:3])
    names = zipfile.ZipFile(get_settings().data_dir / batch["zip_path"]).namelist()
    assert sorted(names) == ["manifest.json", "p0.png", "p1.png", "p2.png"]


def test_an_image_that_kills_the_bookkeeper_fails_alone_after_the_attempts_cap(finished, tmp_root):
    client, old_id = finished
    poison = support.rows_of(old_id)[1]["input_key"]
    new_id = render(client, old_id).get_json()["batch_id"]
    books = bookkeeper(tmp_root, CVUNET_TEST_CRASH_ON=poison)
    try:
        support.wait_batch(new_id, timeout=120)
    finally:
        support.kill_group(books)
    news = support.rows_of(new_id)
    assert [r["state"] for r in news] == ["success", "failure", "success", "failure"]
    assert news[1]["error_code"] == "crashed" and news[1]["attempts"] == get_settings().max_attempts + 1


def test_the_batch_page_renders_again_with_the_upload_forms_controls(finished, app, alice):
    _, old_id = finished
    browser = support.user_client(app, alice)
    page = browser.get(f"/batches/{old_id}").get_data(as_text=True)
    assert 'id="render-batch-form"' in page
    for name in ("format", "bg_color", "alpha_only", "alpha_threshold", "opaque_threshold", "erode", "feather"):
        assert f'name="{name}"' in page, name
    token = support.page_csrf(browser, f"/batches/{old_id}")
    form = {"csrf_token": token, "format": "webp", "erode": "2", "feather": "1", "bg_color": "#ff0000"}
    answer = browser.post(f"/batches/{old_id}/render", data=form)
    assert answer.status_code == 302
    new_id = answer.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
    news = support.rows_of(new_id)
    assert len(news) == 4 and all(r["owner_id"] == alice.id for r in news)
    options = news[0]["options"]
    assert (options["format"], options["erode"], options["feather"], options["bg_color"]) == ("webp", 2, 1, None)
    new_page = browser.get(f"/batches/{new_id}").get_data(as_text=True)
    assert "Rendering every cut-out again" in new_page and 'id="render-batch-form"' not in new_page  # not done yet
    refused = browser.post(f"/batches/{old_id}/render", data={**form, "erode": "999"})
    assert refused.status_code == 302 and refused.headers["Location"].endswith(f"/batches/{old_id}")
    assert "bad erode &#39;999&#39;" in browser.get(f"/batches/{old_id}").get_data(as_text=True)  # flashed
    assert len(support.rows_of(new_id)) == 4 and support.redis().llen(get_settings().queue) == 0


def done_batch_of(count: int) -> str:
    """A finished batch of `count` successes, as rows only (what the queue is told needs no file)."""
    source = uuid.uuid4()
    rows = [
        {"id": uuid.uuid4(), "batch_id": source, "chunk": 0, "position": pos, "filename": f"p{pos}.png"}
        | {"input_key": f"{pos:064x}", "options": {}, "output_path": f"outputs/old/p{pos}.png"}
        for pos in range(count)
    ]
    with db.transaction() as cur:
        writes.create_batch(cur, source, "upload", count, {}, "outputs/old", 1)
        writes.create_tasks(cur, rows)
        for row in rows:
            writes.record_rendered(cur, row["id"], 64, 48, None, {})
        writes.finish_batch(cur, source, None, None)
    return str(source)


def test_a_large_batch_render_queues_a_few_short_chunks_not_all_its_images(clean_state):
    """Another batch's callback waits behind at most two chunks of renders on the bookkeeping queue."""
    source = done_batch_of(130)
    new_id = rerendering.rerender_batch(OPERATOR, source, OutputOptions(), get_settings())
    rows = support.rows_of(new_id)
    assert len(rows) == 130 and max(r["chunk"] for r in rows) == 6  # seven chunks of 20 at most
    assert max(Counter(r["chunk"] for r in rows).values()) == render_batch.CHUNK == 20
    queued = support.redis().lrange(get_settings().bookkeeping_queue, 0, -1)
    tasks = Counter(json.loads(raw)["headers"]["task"] for raw in queued)
    assert tasks == {dispatch.RENDER_IMAGE: 2 * render_batch.CHUNK}  # batch_lifecycle.WINDOW chunks in flight
    assert support.redis().llen(get_settings().queue) == 0  # nothing for a model worker


def render_row_of(source_id, name: str) -> uuid.UUID:
    """A pending render of `source_id`, outside any batch (what render_job runs, whoever sent it)."""
    task_id = uuid.uuid4()
    with db.transaction() as cur:
        source = reads.get_task(cur, source_id)
        row = {"id": task_id, "filename": name, "input_key": source["input_key"], "options": {}}
        writes.create_tasks(cur, [row | {"output_path": f"outputs/new/{name}", "rendered_from": source_id}])
    return task_id


def test_a_bug_while_drawing_fails_that_image_alone_and_a_run_is_never_repeated(clean_state):
    storage = Storage(get_settings().data_dir)
    source_id = uuid.uuid4()
    photo_png = support.png_bytes(1)
    row = {"id": source_id, "filename": "p.png", "input_key": storage.put_input(photo_png), "options": {}}
    with db.transaction() as cur:
        writes.create_tasks(cur, [row | {"output_path": "outputs/old/p.png"}])
        writes.record_rendered(cur, source_id, 64, 48, 0.9, {})
    write_atomic(raw_matte_path(storage.root / "outputs/old/p.png"), raw_matte_png(np.full((48, 64), 200, np.uint8)))

    def bug(input_key: str) -> None:
        raise RuntimeError("a bug")

    broken = render_row_of(source_id, "broken.png")
    outcome = render_job.run(str(broken), "test", get_settings(), before=bug)
    assert (outcome["state"], outcome["error_code"]) == ("failure", "internal")
    assert support.task_row(broken)["error_code"] == "internal" and "a bug" in support.task_row(broken)["error"]

    fine = render_row_of(source_id, "fine.png")
    assert render_job.run(str(fine), "test", get_settings())["state"] == "success"
    done = support.task_row(fine)
    assert (done["state"], done["width"], done["height"], done["confidence"]) == ("success", 64, 48, 0.9)
    assert (storage.root / "outputs/new/fine.png").exists() and done["attempts"] == 1
    again = render_job.run(str(fine), "test", get_settings(), before=bug)  # a second copy of its message
    assert again["state"] == "success" and support.task_row(fine)["attempts"] == 1  # found final: did nothing
