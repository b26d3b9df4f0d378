"""What goes on the queue: the task names and the signatures that publish them, in one place.

Everything that enqueues (the web side, the operator's commands, the worker's batch lifecycle)
publishes through here, by task name, so none of them imports the tasks module (and through it the
model's runtime).

An image's message names its task; the worker runs it as the task's row says (worker/image_run.py)
and drops a message whose row it cannot find: commit the row (or its reset, for a retry) first,
then publish.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from celery import chord, group

from cvunet_matting.celery_app import app

MATTE_IMAGE = "cvunet_matting.matte_image"
CHUNK_DONE = "cvunet_matting.chunk_done"
FINALIZE_BATCH = "cvunet_matting.finalize_batch"
LIST_FOLDER = "cvunet_matting.list_folder"
RENDER_IMAGE = "cvunet_matting.render_image"
# Routed to the bookkeeping queue (celeryconfig.task_routes): a model worker only ever mattes.
BOOKKEEPING_TASKS = (CHUNK_DONE, FINALIZE_BATCH, LIST_FOLDER, RENDER_IMAGE)


def image_signature(row: Mapping[str, Any]):
    """The task that makes a task row's result, under the row's own id: matte_image on a model worker,
    or, for a re-render (a row drawn from another task's raw matte), render_image on the bookkeeping
    worker. Everything that publishes rows (a batch's chunks, requeue, reconcile) comes through here,
    so a re-render put back on the queue never reaches the model."""
    if row.get("rendered_from"):
        return app.signature(RENDER_IMAGE, args=(str(row["id"]),), task_id=str(row["id"]), immutable=True)
    kwargs = {
        "input_key": row["input_key"],
        "options": row["options"],
        "output_path": row["output_path"],
        "batch_id": str(row["batch_id"]) if row.get("batch_id") else None,
    }
    if row.get("owner_id") is not None:  # results are reused within one owner's work only
        kwargs["owner"] = row["owner_id"]
    return app.signature(MATTE_IMAGE, kwargs=kwargs, task_id=str(row["id"]), immutable=True)


def chunk_done(batch_id: str, idx: int):
    return app.signature(CHUNK_DONE, args=(batch_id, idx), immutable=True)


def finalize_batch(batch_id: str, _chunk: int | None = None):
    return app.signature(FINALIZE_BATCH, args=(batch_id,), immutable=True)


def listing_id(batch_id: str) -> str:
    """A folder batch's listing task id: one per batch, so reconcile can tell whether Redis holds it."""
    return f"list-{batch_id}"


def publish_listing(batch_id: str) -> None:
    app.signature(LIST_FOLDER, args=(batch_id,), immutable=True).apply_async(task_id=listing_id(batch_id))


def publish_image(row: Mapping[str, Any]) -> None:
    image_signature(row).apply_async()


def publish_chunk(rows: Sequence[Mapping[str, Any]], callback) -> None:
    """The rows as one chord: `callback` runs once every image has returned its outcome."""
    chord(group(image_signature(r) for r in rows), callback).apply_async()


def republish(rows: Sequence[Mapping[str, Any]], callback_for_chunk=finalize_batch) -> None:
    """Publish rows again under their own ids; batch members as one chord per (batch, chunk).

    `callback_for_chunk(batch_id, chunk)` is the chord's callback: finalize again after a requeue,
    or carry on with the batch's chunks after a reconcile.
    """
    groups = defaultdict(list)
    for row in rows:
        groups[(str(row["batch_id"]) if row["batch_id"] else None, row["chunk"])].append(row)
    for (batch_id, chunk), members in groups.items():
        if batch_id is None:
            for row in members:
                publish_image(row)
        else:
            publish_chunk(members, callback_for_chunk(batch_id, chunk))
