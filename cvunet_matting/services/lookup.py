"""Finding work by id as an actor: the one visibility rule. A row the actor does not own is answered
exactly like a missing or deleted one (`not_found`), so ids leak nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from cvunet_matting import db
from cvunet_matting.accounts.users import Actor
from cvunet_matting.db import reads
from cvunet_matting.db.rows import BatchCounts, BatchRow, TaskRow
from cvunet_matting.errors import ErrorCode, InputError

FAILURES_LISTED = 20  # a batch's status names its first failed images, whatever page of items it shows


def parse_id(value: str) -> str:
    """A task's or batch's id in its canonical form; `bad_id` for anything that is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InputError(f"{value!r} is not a valid id (a UUID)", code=ErrorCode.BAD_ID) from None


def task_for(actor: Actor, task_id: str) -> TaskRow:
    """The task's row, if the actor may see it."""
    with db.transaction() as cur:
        row = reads.get_task(cur, parse_id(task_id))
    if row is None or row["deleted_at"] or not actor.owns(row):
        raise InputError(f"no task {task_id}", code=ErrorCode.NOT_FOUND)
    return row


def visible_task(actor: Actor, task_id) -> TaskRow | None:
    """The task's row if the actor may see it, else None (a re-render's source, linked only then)."""
    try:
        return task_for(actor, str(task_id))
    except InputError:
        return None


@dataclass(frozen=True)
class BatchView:
    """A batch's row, its images counted by state, and one page of its images."""

    batch: BatchRow
    counts: BatchCounts
    items: list[TaskRow]

    @property
    def finished(self) -> int:
        return self.counts["success"] + self.counts["failure"]


def batch_for(actor: Actor, batch_id: str, offset: int = 0, limit: int = 0, order: str = "position") -> BatchView:
    """The batch, if the actor may see it, with `limit` of its images from `offset` in `order`
    (reads.ITEM_ORDERS)."""
    bid = parse_id(batch_id)
    with db.transaction() as cur:
        batch = reads.get_batch(cur, bid)
        if batch is None or batch["deleted_at"] or not actor.owns(batch):
            raise InputError(f"no batch {batch_id}", code=ErrorCode.NOT_FOUND)
        return BatchView(batch, reads.batch_counts(cur, bid), reads.batch_items(cur, bid, offset, limit, order))


def batch_failures(view: BatchView) -> list[TaskRow]:
    """The batch's first failed images, in submission order (none read when nothing failed)."""
    if not view.counts["failure"]:
        return []
    with db.transaction() as cur:
        return reads.failed_items(cur, view.batch["id"], FAILURES_LISTED)
