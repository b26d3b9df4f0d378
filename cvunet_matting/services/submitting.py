"""New work as an actor: one image, a batch of uploads, or a folder on the server (admins only).

Bad files and quotas are refused by the pipeline (InputError); what is refused here is the request
as a whole: a batch with nothing to run, a folder asked for by a user who is not an admin."""

from __future__ import annotations

from pathlib import Path

from cvunet_matting.accounts.users import Actor
from cvunet_matting.config import Settings
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.pipeline import submission
from cvunet_matting.pipeline.submission import Item


def submit_image(actor: Actor, item: Item, options: OutputOptions, settings: Settings) -> str:
    """The new task's id."""
    return submission.submit_image(item, options, settings=settings, owner=actor)


def submit_batch(
    actor: Actor, items: list[Item], refused: list[dict], options: OutputOptions, settings: Settings
) -> str:
    """The new batch's id; `refused` (filename, code, message) uploads join it as failed images.
    A batch with no image accepted is refused whole, naming every refusal."""
    if not items and not refused:
        raise InputError("send the images as multipart form fields named 'files'", code=ErrorCode.NO_FILE)
    if not items:
        first = refused[0]
        raise InputError(f"no file was accepted: {first['message']}", code=first["code"], refused=refused)
    return submission.submit_batch(items, options, source="upload", settings=settings, owner=actor, refused=refused)


def check_may_submit_folders(actor: Actor) -> None:
    """Folders on the server are the operator's bulk path: admins only."""
    if not actor.is_admin:
        raise InputError("only admins may submit server-side folders", code=ErrorCode.FORBIDDEN)


def submit_folder(actor: Actor, folder: str, options: OutputOptions, settings: Settings) -> str:
    """The new batch's id; a relative `folder` lies under the first allowed root. Its listing runs in
    a task: the batch's status gives its total once it is known."""
    check_may_submit_folders(actor)
    path = Path(folder) if Path(folder).is_absolute() else settings.allowed_roots[0] / folder
    try:
        return submission.submit_folder(str(path), options, settings=settings, owner=actor)
    except (OSError, ValueError):  # too long a name, unencodable characters...
        raise InputError("the folder cannot be read", code=ErrorCode.NOT_FOUND) from None
