"""A finished batch drawn again with other options: a new batch whose every image is a re-render of
the old one's (render_job.py, on the bookkeeping worker), run through the batch lifecycle like any
other batch, so its chunks, finalize, manifest and ZIP are the existing ones (batch_lifecycle.py).

The new rows are recorded here at once, under the owner's quota lock, each naming its source
(`rendered_from`); an image the old batch did not finish well (it failed, or retention or a delete
took it) is failed at once with code `no_matte` and costs no message. One whose files went missing
otherwise fails the same way when the worker looks.
"""

from __future__ import annotations

import uuid

from cvunet_matting import db
from cvunet_matting.accounts import quotas
from cvunet_matting.accounts.users import Actor
from cvunet_matting.config import Settings
from cvunet_matting.db import reads, writes
from cvunet_matting.db.rows import BatchRow, TaskRow
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.storage.files import Storage
from cvunet_matting.storage.naming import unique_names

from . import batch_lifecycle
from .render_job import unrenderable

# Images per chunk (chord) of a render batch, CVUNET_BATCH_CHUNK at most. The bookkeeping queue is
# first in, first out, and its worker also runs every batch's chunk callbacks and finalize: with
# batch_lifecycle.WINDOW chunks in flight, at most 2 x 20 renders (about 10 s of its two processes at
# 12 MP) are queued ahead of another batch's callback, whose model workers would wait meanwhile.
CHUNK = 20
SOURCE_PREFIX = "render:"  # a render batch's source: the batch it draws from (an id, naming no photo)


def submit(source: BatchRow, options: OutputOptions, owner: Actor | None, settings: Settings) -> str:
    """Record the new batch, `owner`'s, counted by the owner's quotas, and dispatch its first chunks."""
    with db.transaction() as cur:
        olds = reads.batch_tasks(cur, source["id"])
    reasons = {pos: unrenderable(old) for pos, old in enumerate(olds)}
    failing = sum(1 for reason in reasons.values() if reason)
    quotas.precheck(owner, len(olds) - failing, refused=failing)
    storage = Storage(settings.data_dir)
    batch_id = uuid.uuid4()
    chunk = min(CHUNK, settings.batch_chunk)
    chunks = (len(olds) + chunk - 1) // chunk
    with db.transaction() as cur:
        quotas.reserve(cur, owner, len(olds) - failing, refused=failing)
        run_dir = storage.relative(storage.new_run_dir())
        rows = new_rows(batch_id, run_dir, olds, reasons, options, chunk)
        writes.create_batch(
            cur, batch_id, f"{SOURCE_PREFIX}{source['id']}", len(rows), options.to_dict(), run_dir, chunks
        )
        writes.create_tasks(cur, rows)
        writes.fail_unrenderable(cur, {row["id"]: reasons[row["position"]] for row in rows if reasons[row["position"]]})
        if owner is not None and owner.id is not None:
            writes.set_owner(cur, owner.id, batch_id=batch_id)
    batch_lifecycle.start(str(batch_id))
    return str(batch_id)


def new_rows(
    batch_id: uuid.UUID,
    run_dir: str,
    olds: list[TaskRow],
    reasons: dict[int, str | None],
    options: OutputOptions,
    chunk_size: int,
) -> list[dict]:
    """The new batch's rows, in the old one's order, each naming its source. One that will not run
    stores and reads nothing (input_key '', as a file refused on arrival)."""
    names = unique_names([old["filename"] for old in olds], options.extension)
    return [
        {
            "id": uuid.uuid4(),
            "batch_id": batch_id,
            "chunk": pos // chunk_size,
            "position": pos,
            "filename": old["filename"],
            "input_key": "" if reasons[pos] else old["input_key"],
            "options": options.to_dict(),
            "output_path": f"{run_dir}/{name}",
            "rendered_from": old["id"],
        }
        for pos, (old, name) in enumerate(zip(olds, names, strict=True))
    ]
