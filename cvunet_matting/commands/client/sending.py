"""Sending a push's files: batches sized by the server's limits, each recorded in the output folder's
record before and after it is sent, held back while the account's in-flight quota is full, halved when
refused as too large; and, on resume, the batches an earlier run sent reconciled with the server."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from rich.progress import Progress

from . import folder as local
from .api import Api, Part, fields_size
from .errors import ApiError
from .follow import HOLD_S, finished, items
from .state import Entry, PushState

ADOPT_AMONG = 20  # the newest batches looked through for one a stopped run sent but did not record
CLOCK_MARGIN = timedelta(seconds=60)  # web instances' clocks may differ this much
QUOTA_WAIT_S = 300  # an in-flight quota frees within minutes: wait; a day's quota does not: stop
OTHERS_WAIT_S = 5  # the quota is full of the account's other work, which this run cannot wait on


def batch_size(limits: dict) -> int:
    """The most files one batch may hold: the request's limit and the account's quotas on one batch."""
    quotas = limits["quotas"]
    caps = [limits["max_files_per_request"], quotas["max_batch"], quotas["max_in_flight"], quotas["max_per_day"]]
    return max(1, min(c for c in caps if c is not None))


def adopt_unrecorded(api: Api, state: PushState) -> None:
    """A batch the last run sent but was stopped before recording: found among the caller's newest batches
    (made after the server's time before it was sent, holding exactly its file names) and recorded, so its
    files are not sent twice. None found: the files are sent again."""
    sending, state.sending = state.sending, None
    if not sending:
        return
    names = set(sending["files"])
    since = datetime.fromisoformat(sending["since"]) - CLOCK_MARGIN if sending.get("since") else None
    for batch in api.batches(ADOPT_AMONG):
        made = batch.get("created_at")
        if since and made and datetime.fromisoformat(made) < since:
            break  # newest first: the rest are older still
        if {item["filename"] for item in items(api, batch["batch_id"])} == names:
            for name, sha in sending["files"].items():
                state.files[name] = Entry(sha, batch["batch_id"])
            break
    state.save()


def forget_lost_batches(api: Api, state: PushState) -> None:
    """Batches an earlier run recorded that the server no longer has (deleted, expired): their files are
    uploaded again."""
    for batch_id in state.batches():
        try:
            batch = api.batch(batch_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            batch = {"expired": True}
        if batch.get("expired"):
            state.files = {n: e for n, e in state.files.items() if e.batch_id != batch_id or e.output}
            state.save()


def upload(api: Api, todo: list[local.LocalFile], limits: dict, state: PushState, bars: Progress) -> None:
    bar = bars.add_task("upload", total=len(todo), unit="files")
    room = limits["max_request_bytes"] - fields_size(state.options)
    queue = list(local.batches(todo, batch_size(limits), room))
    ended: set[str] = set()  # batches seen done while waiting for room
    while queue:
        run = queue.pop(0)
        if limits["quotas"]["max_in_flight"] is not None:
            bars.update(bar, unit="files, waiting for room")
            wait_for_room(api, len(run), limits["quotas"]["max_in_flight"], state, ended)
            bars.update(bar, unit="files")
        parts = [Part(f.relative, f.path.read_bytes()) for f in run]
        since = api.server_time.isoformat() if api.server_time else None
        state.sending = {"since": since, "files": {p.name: local.sha256_of(p.data) for p in parts}}
        state.save()
        try:
            accepted = api.submit_batch(parts, state.options, lambda part: bars.advance(bar))
        except ApiError as exc:
            state.sending = None  # refused: nothing of it was kept
            refused_all = exc.details.get("refused")
            if not (isinstance(refused_all, list) and refused_all):
                bars.update(bar, completed=len(todo) - sum(len(r) for r in queue) - len(run))
                state.save()
                queue[:0] = retry_plan(exc, run)
                continue
            accepted = {"batch_id": "", "refused": refused_all}  # no image in it: each file's refusal recorded
        state.sending = None
        refused = {r["filename"]: f"{r['message']} ({r['code']})" for r in accepted.get("refused", [])}
        for file, part in zip(run, parts, strict=True):
            earlier = state.files.get(file.relative)  # an edited file's: its old result is this one's to replace
            replaces = (earlier.output or earlier.replaces) if earlier else None
            error = refused.get(file.relative)
            entry = Entry(local.sha256_of(part.data), accepted["batch_id"], error=error, replaces=replaces)
            state.files[file.relative] = entry
        state.save()  # after each batch: a run stopped later sends none of these again


def wait_for_room(api: Api, files: int, cap: int, state: PushState, ended: set[str]) -> None:
    """Until `files` more images fit under the account's quota in flight: held on this push's oldest
    unfinished batch (answered as soon as one of its images finishes), not polled. `ended`: batches seen
    done, not asked about again."""
    while api.limits()["usage"]["in_flight"] + files > cap:
        for batch_id in (b for b in state.batches() if b not in ended):
            batch = api.batch(batch_id)
            if batch["state"] == "done":
                ended.add(batch_id)
            else:
                api.batch(batch_id, wait=HOLD_S, seen=finished(batch))
                break
        else:  # the quota is held by the account's other work: its end cannot be waited on here
            time.sleep(OTHERS_WAIT_S)


def retry_plan(exc: ApiError, run: list[local.LocalFile]) -> list[list[local.LocalFile]]:
    """What to send instead of a refused batch: halves when it was too large for the server (a proxy's
    smaller limit, a quota changed since), the same batch after the wait a quota in flight asks."""
    if exc.code in ("too_large", "batch_too_large") and len(run) > 1:
        half = len(run) // 2
        return [run[:half], run[half:]]
    if exc.code == "quota_exceeded" and exc.retry_after is not None and exc.retry_after <= QUOTA_WAIT_S:
        time.sleep(exc.retry_after)
        return [run]
    raise exc
