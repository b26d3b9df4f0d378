"""Folder batches listed in a bookkeeping task: the request answers before any file is read, the
batch fills a chunk at a time, a listing cut short resumes, and a lost listing is found by reconcile."""

from __future__ import annotations

import uuid
import zipfile

import pytest

from cvunet_matting import db
from cvunet_matting.accounts import users as accounts
from cvunet_matting.config import get_settings
from cvunet_matting.db import reads
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.pipeline import dispatch, folder_listing
from cvunet_matting.pipeline.submission import folder_items, submit_folder
from cvunet_matting.recovery.requeue import reconcile
from cvunet_matting.web import create_app
from tests import support
from tests.support import png_bytes, rows_of, wait_batch

pytestmark = [pytest.mark.services]


def make_folder(name: str, count: int):
    folder = get_settings().allowed_roots[0] / f"{name}-{uuid.uuid4().hex[:6]}"
    (folder / "sub").mkdir(parents=True)
    for i in range(count):
        (folder / ("sub" if i % 2 else "") / f"img{i:02d}.png").write_bytes(png_bytes(40 + i, (40, 30)))
    return folder


def test_the_request_reads_no_file_and_the_batch_waits_for_its_listing(clean_state):
    folder = make_folder("quick", 5)
    batch_id = submit_folder(str(folder), OutputOptions())
    assert support.batch_row(batch_id)["state"] == "listing" and rows_of(batch_id) == []
    assert support.redis().llen("bookkeeping") == 1  # the listing task, nothing on the model queue
    assert support.redis().llen("matting") == 0


def test_the_batch_page_says_the_folder_is_being_listed_then_shows_its_images(clean_state):
    admin = support.make_user(admin=True, prefix="lister")
    pages = support.user_client(create_app({"TESTING": True}), admin)
    batch_id = submit_folder(str(make_folder("page", 3)), OutputOptions(), owner=accounts.by_key(admin.key))
    assert "Listing the folder… 0 images so far" in pages.get(f"/batches/{batch_id}").get_data(as_text=True)
    folder_listing.list_folder(batch_id)
    html = pages.get(f"/batches/{batch_id}").get_data(as_text=True)
    assert "Listing the folder" not in html and "3 images" in html and html.count('class="tile"') == 3


@pytest.mark.stack
def test_a_folder_batch_is_listed_chunk_by_chunk_and_finishes(clean_state, worker_factory):
    folder = make_folder("chunks", 5)
    worker_factory("cpu0@%h", CVUNET_BATCH_CHUNK="2")
    batch = wait_batch(submit_folder(str(folder), OutputOptions()), timeout=120)
    rows = rows_of(str(batch["id"]))
    assert batch["total"] == 5 and [r["state"] for r in rows] == ["success"] * 5
    assert sorted(r["chunk"] for r in rows) == [0, 0, 1, 1, 2]
    with db.transaction() as cur:
        cur.execute("SELECT idx, state FROM chunks WHERE batch_id = %s ORDER BY idx", (batch["id"],))
        assert [(c["idx"], c["state"]) for c in cur.fetchall()] == [(0, "done"), (1, "done"), (2, "done")]
    with zipfile.ZipFile(get_settings().data_dir / batch["zip_path"]) as archive:
        names = [n for n in archive.namelist() if n != "manifest.json"]
    assert len(names) == 5 and "sub/img01.png" not in names  # flattened, unique names as for uploads


def test_a_listing_cut_short_resumes_after_the_pages_it_recorded(clean_state):
    folder = make_folder("resume", 5)
    batch_id = submit_folder(str(folder), OutputOptions())
    with db.transaction() as cur:
        batch = reads.get_batch(cur, batch_id)
    items = folder_items(str(folder), get_settings())
    names = [i.filename.replace("/", "_") for i in items]
    folder_listing.record_page(batch, 0, 0, items[:2], names[:2], None)  # then its worker died
    result = folder_listing.list_folder(batch_id, get_settings())
    rows = rows_of(batch_id)
    assert result["listed"] == 5 and [r["position"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["filename"] for r in rows] == [i.filename for i in items]  # each file once, in order
    assert support.batch_row(batch_id)["state"] == "running" and support.batch_row(batch_id)["total"] == 5
    assert folder_listing.list_folder(batch_id)["listed"] == 0  # a duplicate delivery adds nothing


def test_a_file_gone_before_it_is_read_fails_alone(clean_state):
    folder = make_folder("gone", 3)
    batch_id = submit_folder(str(folder), OutputOptions())
    with db.transaction() as cur:
        batch = reads.get_batch(cur, batch_id)
    items = folder_items(str(folder), get_settings())
    items[1].path.unlink()
    folder_listing.record_page(batch, 0, 0, items, ["a.png", "b.png", "c.png"], None)
    states = {r["filename"]: (r["state"], r["error_code"]) for r in rows_of(batch_id)}
    assert states[items[1].filename] == ("failure", "refused")
    assert [s for s in states.values() if s[0] == "pending"] == [("pending", None)] * 2


def test_reconcile_requeues_a_listing_that_redis_lost(clean_state):
    folder = make_folder("lost", 2)
    batch_id = submit_folder(str(folder), OutputOptions())
    support.redis().delete("bookkeeping")  # Redis restarted without its data
    found = reconcile(settle_s=0, notify=lambda *_: None)
    assert batch_id in found["stalled_batches"]
    queued = support.redis().lrange("bookkeeping", 0, -1)
    assert len(queued) == 1 and dispatch.listing_id(batch_id).encode() in queued[0]
    assert batch_id not in reconcile(settle_s=0, notify=lambda *_: None)["stalled_batches"]  # held now
