"""The answers both JSON edges give (the API under /api/v1, the pages' own routes under /page), always
as the asking actor: new work accepted with its poll hint, a status held until it changes, listings,
files. The work itself is the service layer's (services/); this module only shapes it for HTTP.

Unfinished work tells clients when to poll (polling.py: half the expected wait, sub-second in the
body, whole seconds in Retry-After), and where to wait instead: ?wait= answers the moment it ends.
Tighter polling only takes CPU from the workers (32 clients at 10/s cost a 2-core host a fifth of
its matting throughput).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import current_app, g, jsonify, url_for
from werkzeug.exceptions import TooManyRequests

from cvunet_matting.accounts import quotas
from cvunet_matting.accounts.users import DEFAULT_QUOTAS, Actor
from cvunet_matting.config import Settings
from cvunet_matting.db.rows import TaskRow
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.services import listings
from cvunet_matting.services.lookup import BatchView, batch_failures, batch_for, parse_id, task_for
from cvunet_matting.states import FINAL_TASK_STATES, BatchState, TaskState

from . import downloads, polling, user_limits, waiting
from .presenters import batch_json, links, listed_batch_json, task_json


def actor() -> Actor:
    """Who the request acts for (set by the API's key check or the pages' gate)."""
    return g.actor


def hub() -> waiting.Hub:
    return current_app.extensions["cvunet.waits"]


def hint_for(row: Mapping[str, Any]) -> float:
    """Seconds until an unfinished task (or a batch, from its row) is worth asking about again."""
    return polling.retry_after(row, current_app.extensions["cvunet.pace"])


def with_hint(payload: dict, seconds: float, status_url: str) -> tuple[dict, dict]:
    """The payload with the poll hint and the wait URL, and the Retry-After header."""
    wait_url = f"{status_url}{'&' if '?' in status_url else '?'}wait={waiting.MAX_WAIT_S:g}"
    body = {**payload, "poll_after_s": seconds, "wait_url": wait_url}
    return body, {"Retry-After": polling.header(seconds)}


def accepted(payload: dict, location: str, row: Mapping[str, Any] | None = None):
    """202 for new work; the hint from the queue ahead of `row` (a task's or a batch's)."""
    seconds = hint_for(row) if row else polling.UNKNOWN_S
    body, headers = with_hint({**payload, "status_url": location}, seconds, location)
    return jsonify(body), 202, {"Location": location, **headers}


def poll_hint(payload: dict, finished: bool, seconds: float = polling.UNKNOWN_S, status_url: str | None = None):
    if finished:
        return jsonify(payload), 200
    body, headers = with_hint(payload, seconds, status_url or payload["status_url"])
    return jsonify(body), 200, headers


def task_final(row: TaskRow) -> bool:
    return row["state"] in FINAL_TASK_STATES


def task_reader(task_id: str, who: Actor) -> Callable[[], TaskRow]:
    return lambda: task_for(who, task_id)


def held_task(task_id: str, wait: float, seen: str | None = None) -> TaskRow:
    """The task's row: at once, or once final (or not `seen`, for the pages), or after `wait` seconds."""
    read = task_reader(task_id, actor())
    row = read()  # a bad or unknown id answers at once, holding no slot
    stop = task_final if seen is None else (lambda row: task_final(row) or row["state"] != seen)
    if wait <= 0 or stop(row):
        return row
    return waiting.hold(hub(), (str(row["id"]),), read, stop, wait, user_limits.wait_place(actor()))


def image_accepted(task_id: str, wait: float = 0.0):
    """A new image's answer: its result at once if it ends within `wait` seconds, else 202."""
    row = None
    if wait > 0:
        try:  # submitted already: without a free slot (or a free place of the user's) a plain 202, never a refusal
            row = held_task(task_id, wait)
        except (TooManyRequests, user_limits.TooManyWaits):
            row = None
        if row is not None and task_final(row):
            return jsonify(task_json(row)), 200
    return accepted(
        {"task_id": task_id, "view_url": url_for("ui.task_view", task_id=task_id)},
        url_for(f"{links()}.task_status", task_id=task_id),
        row or task_for(actor(), task_id),
    )


def batch_accepted(batch_id: str, total: int, refused: list[dict]):
    batch = batch_for(actor(), batch_id).batch
    return accepted(
        {
            "batch_id": batch_id,
            "total": total,
            "refused": refused,
            "view_url": url_for("ui.batch_view", batch_id=batch_id),
        },
        url_for(f"{links()}.batch_status", batch_id=batch_id),
        {"state": TaskState.PENDING, "created_at": batch["created_at"]},
    )


def batch_rendered(batch_id: str):
    """202 for a batch re-render: the new batch, with its poll link, as any new batch is answered."""
    return batch_accepted(batch_id, batch_for(actor(), batch_id).batch["total"], [])


def folder_accepted(batch_id: str):
    payload = {"batch_id": batch_id, "state": BatchState.LISTING, "total": None}
    payload["view_url"] = url_for("ui.batch_view", batch_id=batch_id)
    return accepted(payload, url_for(f"{links()}.batch_status", batch_id=batch_id))


def rerender(who: Actor, task_id: str, options: OutputOptions, cfg: Settings) -> TaskRow:
    """A re-render in this process's slots (services/rerendering.py): the new task's row."""
    return current_app.extensions["cvunet.renders"].rerender(who, task_id, options, cfg)


def rendered(row: TaskRow):
    """201 with the new task, finished, and where it lives."""
    location = url_for(f"{links()}.task_status", task_id=str(row["id"]))
    return jsonify(task_json(row)), 201, {"Location": location}


def retried(row: TaskRow):
    task_id = str(row["id"])
    location = url_for(f"{links()}.task_status", task_id=task_id)
    return accepted({"task_id": task_id, "state": TaskState.PENDING}, location)


def task_listing(state: str | None, offset: int, limit: int):
    """The actor's tasks (an admin's: everyone's), newest first: what the history page shows."""
    page = listings.tasks(actor(), state, offset, limit)
    return jsonify({"tasks": [task_json(r) for r in page.rows], "total": page.total, "offset": offset, "limit": limit})


def batch_listing(offset: int, limit: int):
    """The actor's batches (an admin's: everyone's), newest first, with their progress."""
    page = listings.batches(actor(), offset, limit)
    batches = [listed_batch_json(b.batch, b.counts) for b in page.rows]
    return jsonify({"batches": batches, "total": page.total, "offset": offset, "limit": limit})


def task_status(task_id: str, wait: float = 0.0, seen: str | None = None):
    row = held_task(task_id, wait, seen)
    if task_final(row):
        return poll_hint(task_json(row), finished=True)
    return poll_hint(task_json(row), finished=False, seconds=hint_for(row))


def batch_summary(view: BatchView) -> dict[str, Any]:
    """A batch's status without items (counts, state, failed images), as its events send it."""
    return batch_json(view.batch, view.counts, [], 0, batch_failures(view))


def batch_summary_reader(batch_id: str, who: Actor) -> Callable[[], dict[str, Any]]:
    return lambda: batch_summary(batch_for(who, batch_id))


def hold_batch(batch_id: str, wait: float, seen: int | None) -> None:
    """Until the batch is done (or, for the pages, more than `seen` of its images have finished), or
    `wait` seconds have passed."""
    who = actor()

    def read() -> BatchView:
        return batch_for(who, batch_id)

    def stop(view: BatchView) -> bool:
        return view.batch["state"] == BatchState.DONE or (seen is not None and view.finished != seen)

    first = read()  # a bad or unknown id answers at once, holding no slot
    if not stop(first):
        waiting.hold(hub(), (parse_id(batch_id),), read, stop, wait, user_limits.wait_place(who))


def batch_status(batch_id: str, offset: int, limit: int, wait: float = 0.0, seen: int | None = None):
    """A batch's page of items: at once, or once done or changed (see hold_batch)."""
    if wait > 0:
        hold_batch(batch_id, wait, seen)
    view = batch_for(actor(), batch_id, offset, limit)
    payload = batch_json(view.batch, view.counts, view.items, offset, batch_failures(view))
    if payload["state"] == BatchState.DONE:
        return poll_hint(payload, finished=True)
    seconds = hint_for({"state": TaskState.PENDING, "created_at": view.batch["created_at"]})
    return poll_hint(payload, False, seconds, url_for(f"{links()}.batch_status", batch_id=payload["batch_id"]))


def limits(cfg: Settings):
    """What one request may hold and the actor's quotas with their use now: a client sizes its batches by
    these instead of learning them from refusals. The files per request are the form parts the app takes
    (web.py: the default largest batch, the options' fields aside)."""
    who = actor()
    quota = {"max_batch": who.max_batch, "max_in_flight": who.max_in_flight, "max_per_day": who.max_per_day}
    request_limits = {
        "max_request_bytes": current_app.config["MAX_CONTENT_LENGTH"],
        "max_files_per_request": DEFAULT_QUOTAS["max_batch"],
        "max_pixels": cfg.max_pixels,
    }
    return jsonify({**request_limits, "quotas": quota, "usage": quotas.usage(who)})


TASK_FILES = {
    "result": downloads.result,
    "alpha": downloads.matte,
    "input": downloads.original,
    "raw_matte": downloads.raw_matte,
}


def task_file(kind: str, task_id: str, download: bool):
    row = task_for(actor(), task_id)  # a stranger's id is a 404 before any place is taken
    return user_limits.download(actor(), lambda: TASK_FILES[kind](row, download))


def batch_zip(batch_id: str):
    batch = batch_for(actor(), batch_id).batch
    return user_limits.download(actor(), lambda: downloads.batch_zip(batch))
