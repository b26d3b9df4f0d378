"""Server-sent events for a task's and a batch's page: the state at once, then each change the moment
the worker reports it, the last one named `end`; the stream closes then, or after waiting.MAX_WAIT_S
(EventSource reconnects by itself after `retry`). Each open stream holds one of the process's wait
slots and one of its user's wait places, like ?wait= (429 when none is free).

A proxy that buffers responses delivers a stream only when it ends: through such a proxy a task's
stream still brings its end on time (it ends then), a batch's progress arrives in one piece. The
pages therefore follow progress by long-polling (?wait=&seen=, see app.js); these streams serve
clients that reach the web tier directly, or through a route that does not buffer.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, stream_with_context

from cvunet_matting.services.lookup import batch_for, task_for
from cvunet_matting.states import BatchState

from . import replies, user_limits, waiting
from .presenters import task_json

RECONNECT_MS = 1000
Value = TypeVar("Value")


def stream(
    ids: tuple[str, ...],
    read: Callable[[], Value],
    final: Callable[[Value], bool],
    present: Callable[[Value], dict[str, Any]],
) -> Response:
    place = user_limits.wait_place(replies.actor())
    changes = waiting.changes(replies.hub(), ids, read, final, waiting.MAX_WAIT_S, place)
    first = next(changes)  # takes the places (429 when none is free) and reads (404) before the stream starts

    def body():
        yield f"retry: {RECONNECT_MS}\n\n"
        for value in itertools.chain([first], changes):
            name = "end" if final(value) else "change"
            yield f"event: {name}\ndata: {json.dumps(present(value))}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream_with_context(body()), mimetype="text/event-stream", headers=headers)


def task_stream(task_id: str) -> Response:
    row = task_for(replies.actor(), task_id)  # an unknown id is a 404 before any slot is taken
    return stream((str(row["id"]),), replies.task_reader(task_id, replies.actor()), replies.task_final, task_json)


def batch_stream(batch_id: str) -> Response:
    batch = batch_for(replies.actor(), batch_id).batch  # an unknown id is a 404 before any slot is taken
    read = replies.batch_summary_reader(batch_id, replies.actor())
    return stream((str(batch["id"]),), read, lambda b: b["state"] == BatchState.DONE, lambda b: b)
