"""`make bench-batch-render`: a finished batch rendered again with other options on the bookkeeping
worker (POST /api/v1/batches/<id>/render), with production defaults: the bookkeeper as `cvunet-matting
worker` starts it (CVUNET_BOOKKEEPING_CONCURRENCY processes), CVUNET_BATCH_CHUNK, no model anywhere.

The source batch is recorded as a model worker would have left it: each image scikit-image's astronaut
as a JPEG (as a phone sends it; each a few pixels different, so each has an input of its own), with
the real ISNet's raw matte of it (`make model`) beside its result. Then the render: how long the whole
batch took to end (ZIP and manifest written), images per second, and how long one task holds a
bookkeeping process (p50, p90, max of each image's start-to-end): the batch is many short tasks, never
one long one; beside it, the same render in this process under the same load (the ratio is what the
queue, the rows and the files add). Last, the request alone for a 2,000-image batch (rows only, with no
worker running): what the caller waits for before the 202. Prints; asserts nothing.

Usage: python benchmarks/bench_batch_render.py [--images 200] [--large 20] [--answer 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
import uuid

import cv2
import harness
from skimage import data

from tests import support

SIZES = {"1 MP": (1224, 816), "12 MP": (4000, 3000)}
OPTIONS = {"format": "jpg", "bg_color": "white", "erode": "1", "feather": "2"}


def photo_jpeg(width: int, height: int, seed: int) -> bytes:
    rgb = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    rgb[:2, :2] = seed % 256, seed // 256 % 256, 7  # a corner of its own: each input is another file
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def real_matte(width: int, height: int) -> bytes:
    """The real ISNet's raw matte of the photo, as the worker keeps it."""
    from cvunet_matting.config import get_settings
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.image.matting import matte_bytes
    from cvunet_matting.model.session import get_session

    settings = get_settings()
    made = matte_bytes(photo_jpeg(width, height, 0), OutputOptions(), get_session(settings), settings, keep_raw=True)
    assert made.raw_matte is not None
    return made.raw_matte


def finished_batch(count: int, width: int, height: int, matte: bytes) -> str:
    """A done batch of `count` successes, each with its input and raw matte on disk."""
    from cvunet_matting import db
    from cvunet_matting.config import get_settings
    from cvunet_matting.db import writes
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.storage.files import Storage, raw_matte_path, write_atomic

    settings = get_settings()
    storage = Storage(settings.data_dir)
    batch_id, run_dir = uuid.uuid4(), storage.relative(storage.new_run_dir())
    rows = []
    for pos in range(count):
        key = storage.put_input(photo_jpeg(width, height, pos))
        rows.append(
            {
                "id": uuid.uuid4(),
                "batch_id": batch_id,
                "chunk": pos // settings.batch_chunk,
                "position": pos,
                "filename": f"p{pos}.jpg",
                "input_key": key,
                "options": OutputOptions().to_dict(),
                "output_path": f"{run_dir}/p{pos}.png",
            }
        )
        write_atomic(raw_matte_path(storage.root / rows[-1]["output_path"]), matte)
    chunks = (count + settings.batch_chunk - 1) // settings.batch_chunk
    with db.transaction() as cur:
        writes.create_batch(cur, batch_id, "upload", count, OutputOptions().to_dict(), run_dir, chunks)
        writes.create_tasks(cur, rows)
        for row in rows:
            writes.record_rendered(cur, row["id"], width, height, 0.9, {})
        cur.execute("UPDATE chunks SET state = 'done' WHERE batch_id = %s", (batch_id,))
        writes.finish_batch(cur, batch_id, None, None)
    return str(batch_id)


def start_bookkeeper() -> subprocess.Popen:
    """The bookkeeper exactly as `cvunet-matting worker` starts it (supervisor.bookkeeper)."""
    from cvunet_matting.config import get_settings
    from cvunet_matting.worker.supervisor import bookkeeper, command

    spec = bookkeeper()
    log = open(harness.ROOT / "books.log", "wb")  # noqa: SIM115 (the process keeps it)
    argv = command(spec, get_settings().bookkeeping_queue, "WARNING")
    proc = subprocess.Popen(
        argv, env={**os.environ, **spec.env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    support.wait_until(lambda: pinged(spec.name), 60, message="bookkeeper up")
    return proc


def pinged(name: str) -> bool:
    from cvunet_matting.celery_app import app

    prefix = name.split("@")[0] + "@"
    return any(node.startswith(prefix) for node in app.control.inspect(timeout=0.5).ping() or {})


def run(count: int, size: str) -> None:
    from cvunet_matting.accounts.users import OPERATOR
    from cvunet_matting.config import get_settings
    from cvunet_matting.services.rerendering import rerender_batch
    from cvunet_matting.webapp.inputs import parse_options

    width, height = SIZES[size]
    matte = real_matte(width, height)
    source = finished_batch(count, width, height, matte)
    clock = time.perf_counter()
    new_id = rerender_batch(OPERATOR, source, parse_options(OPTIONS), get_settings())
    answered = time.perf_counter() - clock
    batch = support.wait_batch(new_id, timeout=3600)
    total = time.perf_counter() - clock
    rows = support.rows_of(new_id)
    held = [(r["finished_at"] - r["started_at"]).total_seconds() * 1000 for r in rows if r["started_at"]]
    ok = sum(r["state"] == "success" for r in rows)
    zip_s = (batch["finished_at"] - max(r["finished_at"] for r in rows)).total_seconds()
    ordered = sorted(held)
    alone = in_process(photo_jpeg(width, height, 1), matte)
    print(
        f"{count} images at {size} ({width}x{height}), {OPTIONS}: {ok}/{count} rendered;"
        f" request answered in {answered * 1000:.0f} ms; batch done (ZIP and manifest) in {total:.1f} s"
        f" = {count / total:.1f} images/s; one task holds a process p50 {statistics.median(held):.0f} ms,"
        f" p90 {ordered[int(0.9 * (len(ordered) - 1))]:.0f} ms, max {ordered[-1]:.0f} ms; ZIP after the last"
        f" image {zip_s:.2f} s; the same render in this process, meanwhile: p50 {alone:.0f} ms"
        f" (task / in-process: {statistics.median(held) / alone:.2f}); load average {os.getloadavg()[0]:.1f}"
    )


def in_process(jpeg: bytes, matte: bytes, repeat: int = 5) -> float:
    """p50 ms of one render in this process (services/rerendering's path, one thread), for the ratio:
    what the queue, the rows and the files add to a render, measured under the same load."""
    from cvunet_matting.config import get_settings
    from cvunet_matting.image.rendering import render
    from cvunet_matting.webapp.inputs import parse_options

    options, walls = parse_options(OPTIONS), []
    for _ in range(repeat):
        clock = time.perf_counter()
        render(jpeg, matte, options, get_settings().max_pixels, 1)
        walls.append((time.perf_counter() - clock) * 1000)
    return statistics.median(walls)


def answer_time(count: int) -> None:
    """How long the request itself takes for a large batch (rows read and recorded, the first chunks
    published): the source as rows only, no worker running (nothing is rendered)."""
    from cvunet_matting import db
    from cvunet_matting.accounts.users import OPERATOR
    from cvunet_matting.config import get_settings
    from cvunet_matting.db import writes
    from cvunet_matting.image.encoding import OutputOptions
    from cvunet_matting.services.rerendering import rerender_batch

    source = uuid.uuid4()
    rows = [
        {"id": uuid.uuid4(), "batch_id": source, "chunk": pos // 200, "position": pos, "filename": f"p{pos}.jpg"}
        | {"input_key": f"{pos:064x}", "options": {}, "output_path": f"outputs/rows-only/p{pos}.png"}
        for pos in range(count)
    ]
    with db.transaction() as cur:
        writes.create_batch(cur, source, "upload", count, {}, "outputs/rows-only", (count + 199) // 200)
        writes.create_tasks(cur, rows)
        cur.execute("UPDATE tasks SET state = 'success' WHERE batch_id = %s", (source,))
        writes.finish_batch(cur, source, None, None)
    walls = []
    for _ in range(3):
        clock = time.perf_counter()
        rerender_batch(OPERATOR, str(source), OutputOptions(), get_settings())
        walls.append(time.perf_counter() - clock)
    print(
        f"the request for a {count}-image batch (rows only, nothing rendered):"
        f" p50 {statistics.median(walls) * 1000:.0f} ms of 3; load average {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=200, help="images of the 1 MP batch")
    parser.add_argument("--large", type=int, default=20, help="images of the 12 MP batch")
    parser.add_argument("--answer", type=int, default=2000, help="images of the batch whose request alone is timed")
    args = parser.parse_args()
    harness.setup()
    from cvunet_matting.config import get_settings

    settings = get_settings()
    print(
        f"bookkeeper: {settings.bookkeeping_concurrency} processes, chunks of {settings.batch_chunk};"
        f" {os.cpu_count()} CPUs on this machine"
    )
    books = start_bookkeeper()
    try:
        run(args.images, "1 MP")
        run(args.large, "12 MP")
    finally:
        support.kill_group(books)
    answer_time(args.answer)


if __name__ == "__main__":
    main()
