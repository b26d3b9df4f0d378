"""The web side of the work: store uploads, record rows, enqueue single images and batches."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cvunet_matting import db
from cvunet_matting.accounts import quotas
from cvunet_matting.accounts.users import Actor
from cvunet_matting.config import Settings, get_settings
from cvunet_matting.db import writes
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.folders import has_image_file, image_files, read_inside
from cvunet_matting.image.imaging import probe
from cvunet_matting.states import BatchState
from cvunet_matting.storage.files import Storage
from cvunet_matting.storage.naming import unique_names

from . import batch_lifecycle, dispatch


@dataclass
class Item:
    """An image to submit: upload bytes, or a file read only when it is stored."""

    filename: str
    content: bytes | None = None
    path: Path | None = None
    root: Path | None = None  # a folder item is read only if it still lies under this root

    @property
    def data(self) -> bytes:
        if self.content is not None:
            return self.content
        if self.path is None or self.root is None:
            raise ValueError(f"item {self.filename!r} has neither bytes nor a file under a root")
        return read_inside(self.path, self.root)


def allowed_folder(folder: str, settings: Settings) -> tuple[Path, Path]:
    """A server-side folder and the allowed root it lies in; refused outside the roots or if missing."""
    path = Path(folder).expanduser().resolve()
    root = next((r for r in settings.allowed_roots if path.is_relative_to(r)), None)
    if root is None:
        roots = ", ".join(str(r) for r in settings.allowed_roots) or "none set"
        raise InputError(
            f"folder {folder!r} is outside the allowed roots (CVUNET_ALLOWED_ROOTS: {roots})",
            code=ErrorCode.FORBIDDEN_PATH,
        )
    if not path.is_dir():
        raise InputError(f"folder {folder!r} does not exist", code=ErrorCode.NOT_FOUND)
    return path, root


def folder_items(folder: str, settings: Settings) -> list[Item]:
    """Image files under a server-side folder, refused unless it lies inside an allowed root."""
    path, root = allowed_folder(folder, settings)
    # A symbolic link inside the folder must not reach outside the allowed root either.
    files = [p for p in image_files(path) if p.resolve().is_relative_to(root)]
    if not files:
        raise InputError(f"no image files in {folder!r}", code=ErrorCode.EMPTY_FOLDER)
    return [Item(str(p.relative_to(path)), path=p, root=root) for p in files]


def submit_folder(
    folder: str, options: OutputOptions, settings: Settings | None = None, owner: Actor | None = None
) -> str:
    """Record a folder batch as 'listing' and queue its listing (folder_listing.py); answers at once,
    whatever the folder holds: only the folder itself and its first image are looked at here."""
    settings = settings or get_settings()
    path, root = allowed_folder(folder, settings)
    if not has_image_file(path, root):
        raise InputError(f"no image files in {folder!r}", code=ErrorCode.EMPTY_FOLDER)
    quotas.precheck(owner, 1)
    batch_id = uuid.uuid4()
    storage = Storage(settings.data_dir)
    run_dir = storage.relative(storage.new_run_dir())
    with db.transaction() as cur:
        store_background(storage, options)  # the command line's (the API sends none with a folder)
        writes.create_batch(cur, batch_id, str(path), 0, options.to_dict(), run_dir, chunks=0, state=BatchState.LISTING)
        if owner is not None and owner.id is not None:
            writes.set_owner(cur, owner.id, batch_id=batch_id)
    dispatch.publish_listing(str(batch_id))
    return str(batch_id)


def submit_image(
    item: Item, options: OutputOptions, settings: Settings | None = None, owner: Actor | None = None
) -> str:
    """Store the upload, record it as `owner`'s (None: the operator), enqueue it; bad images and
    quotas are refused here (InputError).

    The upload is stored only once the binding quota check (under the owner's lock) has found room
    for it: a refused upload leaves nothing on disk, however many arrive at once."""
    settings = settings or get_settings()
    quotas.precheck(owner, 1)
    probe(item.data, settings.max_pixels)
    storage = Storage(settings.data_dir)
    task_id = uuid.uuid4()
    name = unique_names([item.filename], options.extension)[0]
    row = {
        "id": task_id,
        "filename": item.filename,
        "options": options.to_dict(),
        "output_path": f"outputs/images/{task_id}/{name}",
    }
    with db.transaction() as cur:
        quotas.reserve(cur, owner, 1)
        row["input_key"] = storage.put_input(item.data)
        store_background(storage, options)
        writes.create_tasks(cur, [row])
        if owner is not None and owner.id is not None:
            writes.set_owner(cur, owner.id, task_ids=[task_id])
            row["owner_id"] = owner.id
    keep_inputs(storage, [row], [item], options)
    dispatch.publish_image(row)
    return str(task_id)


def submit_batch(
    items: list[Item],
    options: OutputOptions,
    source: str = "upload",
    settings: Settings | None = None,
    owner: Actor | None = None,
    refused: Sequence[dict] = (),
) -> str:
    """Record every item as `owner`'s, then dispatch the first chunks; later chunks follow as earlier ones finish.

    `refused` uploads (filename, message) join the batch as failed rows after the items, so that its
    page, its status and its manifest keep saying which files were turned away and why. Each is a
    row: they count toward the owner's batch size and day (quotas.check), before anything is stored.
    Nothing is stored before the binding quota check has found room for the whole batch."""
    settings = settings or get_settings()
    quotas.precheck(owner, len(items), refused=len(refused))
    storage = Storage(settings.data_dir)
    batch_id = uuid.uuid4()
    names = unique_names([i.filename for i in items] + [r["filename"] for r in refused], options.extension)
    chunks = (len(items) + len(refused) + settings.batch_chunk - 1) // settings.batch_chunk
    with db.transaction() as cur:
        # The binding check first: the run folder and the uploads are stored only once it found room.
        quotas.reserve(cur, owner, len(items), refused=len(refused))
        run_dir = storage.relative(storage.new_run_dir())
        store_background(storage, options)
        rows = batch_rows(storage, batch_id, run_dir, items, refused, names, options, settings)
        writes.create_batch(cur, batch_id, source, len(rows), options.to_dict(), run_dir, chunks)
        writes.create_tasks(cur, rows)
        writes.refuse_listed(cur, {row["id"]: r["message"] for row, r in zip(rows[len(items) :], refused, strict=True)})
        if owner is not None and owner.id is not None:
            writes.set_owner(cur, owner.id, batch_id=batch_id)
    keep_inputs(storage, rows, items, options)
    batch_lifecycle.start(str(batch_id))
    return str(batch_id)


def keep_inputs(
    storage: Storage, rows: Sequence[dict], items: Sequence[Item], options: OutputOptions | None = None
) -> None:
    """Once the rows are committed, before any worker is told: every input is on disk, and the
    background image the options carry. The orphan sweep may have moved aside a file an older task
    had left, unread, that this upload reused, an instant before this commit made it needed again
    (cleanup/orphan_inputs.py): it is stored again."""
    for row, item in zip(rows, items, strict=False):  # a batch's refused rows, after its items, store nothing
        if row["input_key"] and not storage.input_path(row["input_key"]).exists():
            storage.put_input(item.data)
    if options is not None:
        store_background(storage, options)


def store_background(storage: Storage, options: OutputOptions) -> None:
    """The uploaded background image (options.background), stored as inputs are, under the key the
    options name (its sha256): only once a quota check has found room, like the images themselves."""
    if options.background is not None:
        storage.put_input(options.background)


def batch_rows(
    storage: Storage,
    batch_id: uuid.UUID,
    run_dir: str,
    items: list[Item],
    refused: Sequence[dict],
    names: list[str],
    options: OutputOptions,
    settings: Settings,
) -> list[dict]:
    """A batch's task rows, its items' inputs stored; then its `refused` files, with nothing stored."""
    rows = [
        {
            "id": uuid.uuid4(),
            "batch_id": batch_id,
            "chunk": pos // settings.batch_chunk,
            "position": pos,
            "filename": item.filename,
            "input_key": storage.put_input(item.data),
            "options": options.to_dict(),
            "output_path": f"{run_dir}/{name}",
        }
        for pos, (item, name) in enumerate(zip(items, names, strict=False))
    ]
    return rows + [
        {
            "id": uuid.uuid4(),
            "batch_id": batch_id,
            "chunk": pos // settings.batch_chunk,
            "position": pos,
            "filename": refusal["filename"],
            "input_key": "",  # nothing stored, nothing queued (as a listed file found unreadable)
            "options": options.to_dict(),
            "output_path": f"{run_dir}/{names[pos]}",
        }
        for pos, refusal in enumerate(refused, start=len(items))
    ]
