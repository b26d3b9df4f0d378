"""An actor's work, newest first, a page at a time: their own, or everyone's for an admin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from cvunet_matting import db
from cvunet_matting.accounts.users import Actor
from cvunet_matting.db import reads
from cvunet_matting.db.rows import BatchCounts, BatchRow, TaskRow

Row = TypeVar("Row")


@dataclass(frozen=True)
class Page(Generic[Row]):
    """One page of a listing: its rows, how many there are in all, and where the page starts."""

    rows: list[Row]
    total: int
    offset: int
    limit: int

    @property
    def pages(self) -> int:
        return page_count(self.total, self.limit)


def page_count(total: int, per_page: int) -> int:
    """Pages of `per_page` rows that `total` rows fill (at least one, even empty)."""
    return max(-(-total // per_page), 1) if per_page else 1


def tasks(actor: Actor, state: str | None, offset: int, limit: int) -> Page[TaskRow]:
    """The actor's tasks in `state` (None: any), with their owners' names."""
    with db.transaction() as cur:
        rows, total = reads.task_listing(cur, actor.listing_owner, state, offset, limit)
    return Page(rows, total, offset, limit)


@dataclass(frozen=True)
class ListedBatch:
    """A batch as a listing shows it: its row and its images counted by state."""

    batch: BatchRow
    counts: BatchCounts


def batches(actor: Actor, offset: int, limit: int) -> Page[ListedBatch]:
    """The actor's batches (rows: ListedBatch), with their progress and owners' names."""
    with db.transaction() as cur:
        rows, total = reads.batch_listing(cur, actor.listing_owner, offset, limit)
        counts = reads.many_batch_counts(cur, [b["id"] for b in rows])
    return Page([ListedBatch(b, counts[b["id"]]) for b in rows], total, offset, limit)
