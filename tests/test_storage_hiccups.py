"""A storage hiccup never fails an image for good: the data root read-only for a while (issue 26's
report: a tmpfs remounted read-only for 30 s mid-batch), every write the workers make in it, the
reuse of an earlier identical result, a batch's manifest and ZIP, a folder's inputs, is waited out
within CVUNET_STORAGE_RETRY_S (its default here) and succeeds once storage is back.

The read-only root is the workers' own: CVUNET_TEST_READONLY_FLAG (worker/faults.py) makes each call
that would change a file under it fail with EROFS while the flag file exists, at that call, as a
read-only mount does (root is not stopped by a chmod, and a test cannot remount).
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from cvunet_matting.config import load_settings
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.pipeline.submission import Item, submit_batch, submit_folder, submit_image
from tests import support
from tests.support import png_bytes, rows_of, task_row, wait_batch, wait_task

pytestmark = [pytest.mark.services, pytest.mark.stack]
STORAGE_BACK_WITHIN_S = 180  # the retries' backoff reaches 30 s; a loaded 2-core host adds to it
READ_ONLY_S = 30  # the report's read-only window


def test_the_suite_runs_with_the_default_storage_budget():
    assert load_settings().storage_retry_s == load_settings({}).storage_retry_s == 300


def waited_out(row: dict) -> bool:
    """The image met read-only storage and is waiting (or, on a bug, failed): not just queued."""
    return row["state"] in ("retry", "failure") or row["attempts"] >= 2


def read_only_worker(worker_factory, tmp_path: Path, **env) -> tuple[Path, object]:
    flag = tmp_path / "data-root-read-only"
    return flag, worker_factory("cpu0@%h", CVUNET_TEST_READONLY_FLAG=str(flag), **env)


def logged(worker) -> str:
    return worker.log_path.read_text(errors="replace")


def test_a_reused_result_waits_out_read_only_storage(clean_state, worker_factory, tmp_path):
    """The reported failure: the same bytes again take the reuse path, whose copy failed for good
    (`internal error: OSError(30, 'Read-only file system')`, attempts 1)."""
    flag, _ = read_only_worker(worker_factory, tmp_path)
    photo = png_bytes(301, (64, 64))
    first = wait_task(submit_image(Item("a.png", photo), OutputOptions()))
    flag.write_text("")  # the whole data root read-only
    again = submit_image(Item("b.png", photo), OutputOptions())
    met = support.wait_until(lambda: waited_out(r := task_row(again)) and r, 60, message="the copy never failed")
    assert met["state"] != "failure", met["error"]
    flag.unlink()  # storage is back
    row = wait_task(again, timeout=STORAGE_BACK_WITHIN_S)
    assert row["reused"] and row["error"] is None
    data = load_settings().data_dir
    assert (data / row["output_path"]).read_bytes() == (data / first["output_path"]).read_bytes()


def test_a_batch_survives_the_whole_data_root_read_only_mid_batch(clean_state, worker_factory, tmp_path):
    """Eight images, the last two the same bytes as the first two (the reuse path); the data root
    (inputs, outputs, the batch's folder) read-only from the third success until every image left
    has met it, 30 s at least: all eight succeed once it is back, and the ZIP holds them all."""
    flag, _ = read_only_worker(worker_factory, tmp_path, CVUNET_TEST_DELAY_S="1.5")
    photos = [png_bytes(310 + i, (64, 64)) for i in range(6)]
    items = [Item(f"photo{i}.png", data) for i, data in enumerate(photos + photos[:2])]
    batch_id = submit_batch(items, OutputOptions())
    support.wait_until(lambda: sum(r["state"] == "success" for r in rows_of(batch_id)) >= 2, 120, message="2 done")
    flag.write_text("")
    back_at = time.monotonic() + READ_ONLY_S
    support.wait_until(
        lambda: all(r["state"] == "success" or waited_out(r) for r in rows_of(batch_id)),
        STORAGE_BACK_WITHIN_S,
        message="every image left met the read-only root",
    )
    rows = rows_of(batch_id)
    assert not [(r["filename"], r["error"]) for r in rows if r["state"] == "failure"]
    assert all(waited_out(r) for r in rows[6:])  # the reuse path met it too
    time.sleep(max(0.0, back_at - time.monotonic()))  # as long as in the report: a few retries each
    flag.unlink()
    batch = wait_batch(batch_id, timeout=STORAGE_BACK_WITHIN_S)
    rows = rows_of(batch_id)
    assert [r["state"] for r in rows] == ["success"] * 8, [(r["filename"], r["error"]) for r in rows]
    assert [r["reused"] for r in rows[6:]] == [True, True]
    names = sorted(Path(r["output_path"]).name for r in rows)
    with zipfile.ZipFile(load_settings().data_dir / batch["zip_path"]) as archive:
        assert sorted(archive.namelist()) == sorted([*names, "manifest.json"])
        manifest = json.loads(archive.read("manifest.json"))
    assert [item["state"] for item in manifest["items"]] == ["success"] * 8
    assert batch["error"] is None


def test_a_manifest_that_cannot_be_written_is_waited_for(clean_state, worker_factory, tmp_path):
    """The folder passes finalize's probe, then the manifest's write fails (a disk filling up, a mount
    lost in between): the batch waits for storage instead of ending without its ZIP."""
    flag, worker = read_only_worker(worker_factory, tmp_path)
    flag.write_text("*manifest.json*")  # only the manifest's writes fail
    batch_id = submit_batch([Item(f"photo{i}.png", png_bytes(330 + i, (64, 64))) for i in range(3)], OutputOptions())
    support.wait_until(
        lambda: "could not write the batch files" in logged(worker) or support.batch_row(batch_id)["state"] == "done",
        120,
        message="the manifest's write never failed",
    )
    assert support.batch_row(batch_id)["zip_path"] is None
    assert support.batch_row(batch_id)["state"] != "done", support.batch_row(batch_id)["error"]
    flag.unlink()
    batch = wait_batch(batch_id, timeout=STORAGE_BACK_WITHIN_S)
    assert batch["error"] is None
    with zipfile.ZipFile(load_settings().data_dir / batch["zip_path"]) as archive:
        assert len(archive.namelist()) == 4


def test_a_folders_inputs_wait_for_storage_instead_of_being_refused(clean_state, worker_factory, tmp_path):
    """A folder batch listed while the data root is read-only: its files cannot be stored, which is
    the service's storage, not the files' fault (they were refused as unreadable)."""
    folder = load_settings().allowed_roots[0] / "holiday"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"photo{i}.png").write_bytes(png_bytes(340 + i, (64, 64)))
    flag, worker = read_only_worker(worker_factory, tmp_path)
    flag.write_text("")
    batch_id = submit_folder(str(folder), OutputOptions())
    support.wait_until(
        lambda: "an input cannot be stored" in logged(worker) or rows_of(batch_id),
        120,
        message="the listing never met the read-only root",
    )
    assert not [(r["filename"], r["error"]) for r in rows_of(batch_id) if r["state"] == "failure"]
    flag.unlink()
    wait_batch(batch_id, timeout=STORAGE_BACK_WITHIN_S)
    rows = rows_of(batch_id)
    assert [r["state"] for r in rows] == ["success"] * 3, [(r["filename"], r["error"]) for r in rows]
