"""What deleting a finished batch costs the web request that asks for it (prints; asserts nothing).

A batch of N finished images is laid out as the worker leaves one (an input, a result and an alpha
matte per image, the ZIP and manifest, real rows in PostgreSQL), then deleted through the JSON API
in-process: DELETE /api/v1/batches/ID locks its rows, marks them, and removes every file before it
answers. Sizes double up to N; each is timed once (a fresh batch each time).
Usage: python benchmarks/bench_delete.py [--images 10000]
"""

from __future__ import annotations

import argparse
import time
import uuid

from harness import ROOT, setup  # noqa: I001  (first: it isolates the run before the package reads settings)

from cvunet_matting import db
from cvunet_matting.config import get_settings
from cvunet_matting.db import writes
from cvunet_matting.storage.files import Storage, alpha_path
from cvunet_matting.web import create_app
from tests import support


def finished_batch(storage: Storage, owner, count: int) -> str:
    batch_id = uuid.uuid4()
    folder = storage.outputs / f"bench-{batch_id}"
    folder.mkdir(parents=True)
    rows = []
    for n in range(count):
        result = folder / f"img{n}.png"
        result.write_bytes(b"r" * 2048)
        alpha_path(result).write_bytes(b"a" * 512)
        key = storage.put_input(f"{batch_id}-{n}".encode() * 64)
        rows.append(
            {
                "id": uuid.uuid4(),
                "batch_id": batch_id,
                "chunk": 0,
                "position": n,
                "filename": result.name,
                "input_key": key,
                "options": {},
                "output_path": storage.relative(result),
            }
        )
    (folder / "batch.zip").write_bytes(b"z" * 4096)
    (folder / "manifest.json").write_bytes(b"{}")
    with db.transaction() as cur:
        writes.create_batch(cur, batch_id, "upload", count, {}, storage.relative(folder), chunks=1)
        writes.create_tasks(cur, rows)
        cur.execute("UPDATE tasks SET state = 'success', finished_at = now() WHERE batch_id = %s", (batch_id,))
        writes.finish_batch(
            cur, batch_id, storage.relative(folder / "batch.zip"), storage.relative(folder / "manifest.json")
        )
        writes.set_owner(cur, owner.id, batch_id=batch_id)
    return str(batch_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    args = parser.parse_args()
    setup()
    app = create_app({"TESTING": True})
    owner = support.make_user(prefix="bench")
    client = support.user_client(app, owner)
    storage = Storage(get_settings().data_dir)
    print(f"data root {ROOT}; one DELETE per batch, files removed before the answer")
    print("| images | files removed | request, s | per 1,000 images, s |")
    print("|---|---|---|---|")
    count = 1000
    while True:
        count = min(count, args.images)
        batch_id = finished_batch(storage, owner, count)
        started = time.perf_counter()
        answer = client.delete(f"/api/v1/batches/{batch_id}")
        took = time.perf_counter() - started
        assert answer.status_code == 200, answer.get_json()
        removed = answer.get_json()["files_removed"]
        print(f"| {count:,} | {removed:,} | {took:.2f} | {took / count * 1000:.2f} |")
        if count >= args.images:
            break
        count *= 2


if __name__ == "__main__":
    main()
