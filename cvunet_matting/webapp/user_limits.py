"""What one user may hold at once, all web processes together: `?wait=` requests and event streams
(CVUNET_WAITS_PER_USER), downloads in progress (CVUNET_DOWNLOADS_PER_USER). Beyond them, 429 with
Retry-After; the per-process wait slots (waiting.Hub) still bound everyone together.

Without these, one user's requests could hold every process's wait slots, or every thread with slow
downloads, and leave none for anyone else. The operator (no user id: single-user mode, the legacy
tokens) is one party whose requests are many clients: bounded only by the process limits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from flask import Response

from cvunet_matting.accounts.users import Actor
from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.storage.user_slots import Full, UserSlots

from . import waiting
from .support import settings

WAITS = UserSlots("waits", lease_s=int(waiting.MAX_WAIT_S) + 30)
# A download's place is given back when its response is closed; one whose process died first counts
# until its lease ends (an hour: longer than a large ZIP takes on a slow line).
DOWNLOADS = UserSlots("downloads", lease_s=3600)
WAIT_RETRY_S = 2  # a held wait ends within MAX_WAIT_S, most much sooner
DOWNLOAD_RETRY_S = 5


class TooManyWaits(InputError):
    """The user holds every wait place: 429, unless the wait was a favour (an upload's ?wait=: 202)."""

    code = ErrorCode.TOO_MANY_WAITS


def take_place(slots: UserSlots, user_id: int, limit: int, refusal: Callable[[], InputError]) -> str | None:
    """One of the user's places in `slots` (its token; None when Redis could not count), or refusal()
    raised when all `limit` are held."""
    try:
        return slots.take(user_id, limit)
    except Full:
        raise refusal() from None


@contextlib.contextmanager
def wait_place(who: Actor) -> Iterator[None]:
    """One of the user's wait places for the block's duration; InputError (429) when all are held."""
    if who.id is None:
        yield
        return
    limit = settings().waits_per_user
    token = take_place(
        WAITS,
        who.id,
        limit,
        lambda: TooManyWaits(
            f"this account already holds {limit} waiting requests or event streams (at most {limit} at once):"
            " poll instead, or wait again shortly",
            retry_after=WAIT_RETRY_S,
        ),
    )
    try:
        yield
    finally:
        WAITS.give_back(who.id, token)


def download(who: Actor, send: Callable[[], Response]) -> Response:
    """send()'s response, holding one of the user's download places until it is closed (its body sent,
    or the client gone); InputError (429) when all are held."""
    if who.id is None:
        return send()
    limit = settings().downloads_per_user
    token = take_place(
        DOWNLOADS,
        who.id,
        limit,
        lambda: InputError(
            f"this account is already downloading {limit} files (at most {limit} at once): try again when"
            " one has finished",
            code=ErrorCode.TOO_MANY_DOWNLOADS,
            retry_after=DOWNLOAD_RETRY_S,
        ),
    )
    try:
        response = send()
    except BaseException:
        DOWNLOADS.give_back(who.id, token)
        raise
    user_id = who.id
    # send_file hands the server a bare file wrapper (for sendfile), which the server closes without
    # the Response, so the Response's close callbacks would never run. Sent through the Response
    # instead, it is closed with it: the place is given back when the download ends, however it ends.
    response.direct_passthrough = False
    response.call_on_close(lambda: DOWNLOADS.give_back(user_id, token))
    return response
