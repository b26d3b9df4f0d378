"""A server-side folder batch's listing, in a bookkeeping task: the request that submitted it only
checked the folder and answered at once, whatever the folder holds.

The listing records the folder's images a chunk at a time (each page one transaction: its rows, its
input files stored, one more chunk), and dispatches chunks as they are recorded, so the first images
are matted while the rest are still being read and the batch's page fills as it goes. A redelivered
listing (its worker died) resumes after the rows already recorded: the folder is listed in path
order, and a page is recorded whole or not at all.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from cvunet_matting import db
from cvunet_matting.accounts import quotas
from cvunet_matting.accounts.users import Actor
from cvunet_matting.config import Settings, get_settings
from cvunet_matting.db import reads, writes
from cvunet_matting.db.rows import BatchRow
from cvunet_matting.errors import InputError
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.states import BatchState
from cvunet_matting.storage.files import Storage, StorageAway
from cvunet_matting.storage.naming import unique_names
from cvunet_matting.storage.redis_client import get_redis

from . import batch_lifecycle, cancelling
from .submission import Item, folder_items, keep_inputs

log = logging.getLogger(__name__)


LISTING_CANCELLED = "cancelled by its owner: the rest of the folder was not listed"


class ListingStopped(Exception):
    """The listing cannot go on (over a quota, the folder gone): the batch keeps what was recorded."""


def list_folder(batch_id: str, settings: Settings | None = None, give_up: bool = False) -> dict:
    """Record the folder's images page by page, dispatching as it goes; then let the batch run out.

    Raises StorageAway while the data root cannot be written (the task retries, and the listing
    resumes after the pages recorded); with `give_up` (storage stayed away past its budget) the
    listing stops there instead, saying why."""
    settings = settings or get_settings()
    with db.transaction() as cur:
        batch = reads.get_batch(cur, batch_id)
        recorded = reads.listed_count(cur, batch_id) if batch else 0
        next_chunk = reads.chunk_count(cur, batch_id) if batch else 0
        owner = owner_of(cur, batch) if batch else None
    if batch is None or batch["state"] != BatchState.LISTING:
        return {"batch_id": batch_id, "listed": 0}  # listed already: a duplicate delivery
    error = None
    try:
        items = listed_items(batch, owner, settings)
        names = unique_names([i.filename for i in items], OutputOptions.from_dict(batch["options"]).extension)
        for idx, start in enumerate(range(recorded, len(items), settings.batch_chunk), next_chunk):
            stop_if_cancelled(batch_id)
            end = start + settings.batch_chunk
            page = record_page_or_stop(batch, idx, start, items[start:end], names[start:end], owner, give_up)
            batch_lifecycle.fill_window(batch_id)
            recorded = min(end, len(items))
            stop_if_cancelled(batch_id, page)
    except ListingStopped as exc:
        error = str(exc)
        log.warning("listing of batch %s stopped after %d image(s): %s", batch_id, recorded, error)
    batch_lifecycle.end_listing(batch_id, error)
    return {"batch_id": batch_id, "listed": recorded, "error": error}


def stop_if_cancelled(batch_id: str, page: Sequence[str] = ()) -> None:
    """Its owner cancelled the batch: no more pages; the page just recorded (perhaps after the cancel
    read the batch's rows) is cancelled too."""
    client = get_redis()
    if cancelling.batch_cancelled(client, batch_id):
        cancelling.mark(client, page)
        raise ListingStopped(LISTING_CANCELLED)


def owner_of(cur, batch: BatchRow) -> Actor | None:
    """Whose quotas the listed images count against (None: the operator's, unlimited)."""
    user = reads.get_user(cur, batch["owner_id"]) if batch.get("owner_id") is not None else None
    return Actor.from_row(user) if user else None


def listed_items(batch: BatchRow, owner: Actor | None, settings: Settings) -> list[Item]:
    try:
        items = folder_items(batch["source"], settings)
    except (InputError, OSError) as exc:  # emptied, removed or moved since it was submitted
        raise ListingStopped(getattr(exc, "reason", None) or f"the folder cannot be read: {exc}") from exc
    if owner is not None and owner.max_batch is not None and len(items) > owner.max_batch:
        raise ListingStopped(
            f"the folder holds {len(items)} images; at most {owner.max_batch} per batch for this account"
        )
    return items


def record_page_or_stop(
    batch: BatchRow, idx: int, start: int, items: list[Item], names: list[str], owner, give_up: bool
) -> list[str]:
    try:
        return record_page(batch, idx, start, items, names, owner)
    except StorageAway as exc:
        if give_up:
            raise ListingStopped(f"the data folder stayed unwritable: {exc}") from exc
        raise


def record_page(batch: BatchRow, idx: int, start: int, items: list[Item], names: list[str], owner) -> list[str]:
    """One chunk's rows, their inputs stored; a file that cannot be read fails alone, at once. Their ids."""
    storage = Storage(get_settings().data_dir)
    rows, refused = [], {}
    for pos, (item, name) in enumerate(zip(items, names, strict=True), start):
        row = {
            "id": uuid.uuid4(),
            "batch_id": batch["id"],
            "chunk": idx,
            "position": pos,
            "filename": item.filename,
            "options": batch["options"],
            "output_path": f"{batch['output_dir']}/{name}",
        }
        try:
            data = item.data
        except InputError as exc:  # swapped for a link leading out of its root, say
            row["input_key"] = ""
            refused[row["id"]] = exc.reason
        except OSError as exc:  # gone since the listing
            row["input_key"] = ""
            refused[row["id"]] = f"could not be read: {exc.strerror or exc}"
        else:
            row["input_key"] = store_input(storage, data)
        rows.append(row)
    with db.transaction() as cur:
        try:
            quotas.reserve(cur, owner, len(rows), new=True)
        except quotas.OverQuota as exc:
            raise ListingStopped(exc.reason) from exc
        writes.add_listed_chunk(cur, batch["id"], idx, rows)
        writes.refuse_listed(cur, refused)
    keep_inputs(storage, rows, items)
    return [str(row["id"]) for row in rows]


def store_input(storage: Storage, data: bytes) -> str:
    """The file's bytes in the data root: a failure there is the service's storage, not the file's fault."""
    try:
        return storage.put_input(data)
    except OSError as exc:
        raise StorageAway(f"an input cannot be stored: {exc.strerror or exc}") from exc
