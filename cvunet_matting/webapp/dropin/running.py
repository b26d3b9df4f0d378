"""One image as an ordinary task of the asking user, answered in the same request: submitted through the
service layer (stored, recorded, counted by the user's quotas, queued for a worker), then held until it
ends, as `?wait=` holds a status request (woken by Redis pub/sub, at most waiting.MAX_WAIT_S, in one of
the process's and the user's wait places), and its result read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from flask import g
from PIL import Image
from werkzeug.exceptions import TooManyRequests

from cvunet_matting.accounts.users import Actor
from cvunet_matting.db.rows import TaskRow
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.pipeline.submission import Item
from cvunet_matting.services import submitting
from cvunet_matting.states import TaskState

from .. import downloads, replies, waiting
from ..presenters import public_error
from ..support import settings

RETRY_AFTER_S = 5


class StillRunning(Exception):
    """The task did not end within the wait: the client may ask again (a new task) or poll this one."""

    def __init__(self, task_id: str):
        super().__init__(task_id)
        self.task_id = task_id


class Failed(Exception):
    """The task ended as failed: its failure code (states.FailureCode) and the reason clients may see."""

    def __init__(self, row: TaskRow):
        super().__init__(row.get("error") or "failed")
        self.code = row.get("error_code") or "internal"
        self.reason = public_error(row) or "the image could not be processed"


@dataclass(frozen=True)
class Finished:
    task_id: str
    data: bytes
    mimetype: str
    width: int
    height: int
    options: OutputOptions


def run_image(who: Actor, item: Item, options: OutputOptions) -> Finished:
    """Submit one image as `who` and hold until its task ends: Finished, or Failed / StillRunning raised;
    quotas and wait places refuse with InputError (429, Retry-After)."""
    g.actor = who  # replies.held_task reads the actor as every API view does
    task_id = submitting.submit_image(who, item, options, settings())
    try:
        row = replies.held_task(task_id, waiting.MAX_WAIT_S)
    except TooManyRequests:
        raise InputError(
            "this web process holds as many waiting requests as it may: try again shortly",
            code=ErrorCode.TOO_MANY_WAITS,
            retry_after=RETRY_AFTER_S,
        ) from None
    if row["state"] == TaskState.FAILURE:
        raise Failed(row)
    if row["state"] != TaskState.SUCCESS:
        raise StillRunning(task_id)
    data = downloads.stored(row["output_path"]).read_bytes()
    with Image.open(BytesIO(data)) as image:  # the header alone: the result's own size
        width, height = image.size
    made = OutputOptions.from_dict(row["options"])
    return Finished(task_id, data, made.mimetype, width, height, made)
