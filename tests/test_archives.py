"""The batch files written as streams: the manifest is the JSON json.dumps would give, the ZIP holds
every success once (read a page of rows at a time) and the manifest."""

from __future__ import annotations

import json
import zipfile

from cvunet_matting.pipeline import archives
from cvunet_matting.storage.files import Storage


def rows_and_files(storage: Storage, count: int) -> list[dict]:
    rows = []
    for i in range(count):
        ok = i % 4 != 0
        row = {
            "id": f"id-{i}",
            "position": i,
            "filename": f"photo {i}.jpg",
            "state": "success" if ok else "failure",
            "error": None if ok else "truncated",
            "output_path": f"outputs/run/photo {i}.png",
            "width": 4,
            "height": 3,
        }
        if ok:
            (storage.root / row["output_path"]).parent.mkdir(parents=True, exist_ok=True)
            (storage.root / row["output_path"]).write_bytes(f"png {i}".encode())
        rows.append(row)
    return rows


def paged(rows: list[dict], size: int, calls: list[int]):
    def pages(after: int) -> list[dict]:
        calls.append(after)
        return [r for r in rows if r["position"] > after][:size]

    return pages


def test_manifest_and_zip_from_pages(tmp_path):
    storage = Storage(tmp_path)
    rows = rows_and_files(storage, 23)
    calls: list[int] = []
    batch = {"id": "b-1", "source": "upload", "total": 23}
    zip_path, manifest = archives.write_batch_files(tmp_path / "outputs/run", batch, paged(rows, 5, calls), storage)

    whole = {"batch_id": "b-1", "source": "upload", "total": 23, "items": [archives.manifest_entry(r) for r in rows]}
    assert manifest.read_text() == json.dumps(whole, indent=2)
    assert calls[:6] == [-1, 4, 9, 14, 19, 22]  # five rows a page, then the empty page that ends it
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        assert names == [f"photo {i}.png" for i in range(23) if i % 4] + ["manifest.json"]
        assert archive.read("photo 5.png") == b"png 5"
        assert json.loads(archive.read("manifest.json")) == whole
    assert not list((tmp_path / "outputs/run").glob(".*.part"))  # no temporary file left behind
