"""Per-user quotas: images in flight, files per day (UTC), and the largest batch (in files).

Checked twice: cheaply before an upload is read through, and again under a per-user lock in the
transaction that records the new rows, before their files are stored: two uploads at once cannot
both squeeze in, and a refused one stores nothing. A retry is checked and counted like a new image.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cvunet_matting import db
from cvunet_matting.db import reads, writes
from cvunet_matting.errors import ErrorCode, InputError

from .users import Actor

IN_FLIGHT_RETRY_S = 30  # in-flight images finish within seconds to minutes: ask again soon


class OverQuota(InputError):
    """A submission a quota refuses."""


class QuotaExceeded(OverQuota):
    """Over a quota for now: sent as 429 with Retry-After."""

    code = ErrorCode.QUOTA_EXCEEDED

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, retry_after=retry_after)


class BatchTooLarge(OverQuota):
    """More images at once than a quota ever allows: waiting never helps, only splitting (422)."""

    code = ErrorCode.BATCH_TOO_LARGE


def seconds_to_midnight(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds()) + 1)


def check(cur, actor: Actor, images: int, new: bool = True, refused: int = 0) -> None:
    """Raise QuotaExceeded if `images` more would put the actor over a quota (`new`: counts for today).

    `refused`: files of the same batch refused on arrival. They become failed rows, never run, so they
    are not in flight; but they count toward the batch's size and the day's files like any other."""
    if actor.id is None:
        return  # the operator
    check_size(actor, images, new, refused)
    load = reads.owner_load(cur, actor.id)
    if actor.max_in_flight is not None and load["in_flight"] + images > actor.max_in_flight:
        raise QuotaExceeded(
            f"{load['in_flight']} {'image' if load['in_flight'] == 1 else 'images'} of this account"
            f" {'is' if load['in_flight'] == 1 else 'are'} still waiting or running "
            f"(at most {actor.max_in_flight}): try again when some have finished",
            IN_FLIGHT_RETRY_S,
        )
    if new and actor.max_per_day is not None and load["today"] + images + refused > actor.max_per_day:
        raise QuotaExceeded(
            f"this account may submit {actor.max_per_day} images per day (UTC), files refused on arrival included;"
            f" {load['today']} so far",
            seconds_to_midnight(),
        )


def check_size(actor: Actor, images: int, new: bool = True, refused: int = 0) -> None:
    """Raise BatchTooLarge if `images` at once (and `refused` files with them) are over a limit they
    could never fit under."""
    files = images + refused
    counted = {"per batch": (actor.max_batch, files), "per day (UTC)": (actor.max_per_day, files)} if new else {}
    counted["waiting or running at once"] = (actor.max_in_flight, images)
    over = {what: limit for what, (limit, count) in counted.items() if limit is not None and count > limit}
    if over:
        said = ", ".join(f"at most {limit} {what}" for what, limit in over.items())
        most = min(over.values())
        advice = f"split them into batches of at most {most}" if most else "ask an admin to raise the quota"
        sent = f"{images} images"
        if refused:
            sent = f"{files} files ({images} {'image' if images == 1 else 'images'} and {refused} refused)"
        raise BatchTooLarge(f"{sent} at once are more than this account may send ({said}): {advice}")


def usage(actor: Actor) -> dict[str, int]:
    """What of its quotas the actor uses now: images in flight, files today (UTC); nothing for the operator."""
    if actor.id is None:
        return {"in_flight": 0, "today": 0}
    with db.transaction() as cur:
        load = reads.owner_load(cur, actor.id)
    return {"in_flight": load["in_flight"], "today": load["today"]}


def precheck(actor: Actor | None, images: int, new: bool = True, refused: int = 0) -> None:
    """The cheap early check, before any upload is stored."""
    if actor is not None and actor.id is not None:
        with db.transaction() as cur:
            check(cur, actor, images, new, refused)


def reserve(cur, actor: Actor | None, images: int, new: bool = True, refused: int = 0) -> None:
    """The binding check, inside the transaction that records the rows (holds the owner's lock)."""
    if actor is not None and actor.id is not None:
        writes.lock_owner(cur, actor.id)
        check(cur, actor, images, new, refused)


def reserve_retry(cur, task_id, owner_id: int | None) -> None:
    """A retry runs its image again: it takes a place in flight and one of the day's files of the task's
    owner (whoever asked: an admin's retry of a user's task counts for the user), checked under the
    owner's lock like a new submission, and recorded for the day's count (in the caller's transaction)."""
    user = reads.get_user(cur, owner_id) if owner_id is not None else None
    if user is None:
        return  # the operator's work: no quota
    reserve(cur, Actor.from_row(user), 1)
    writes.record_retry(cur, task_id, owner_id)
