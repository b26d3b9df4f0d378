"""`client push` and `client get`: a local folder uploaded in batches the server accepts, resumed from the
output folder's record, followed to the end, and its results written as a mirror of the input tree."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import Progress

from . import folder as local
from .api import Api, Part, fields_size
from .errors import ApiError, ClientError
from .follow import HOLD_S, download_error, finished, follow, item_failure, items, write_result
from .state import Entry, PushState, load_state

QUOTA_WAIT_S = 300  # an in-flight quota frees within minutes: wait; a day's quota does not: stop
OTHERS_WAIT_S = 5


@dataclass
class Outcome:
    written: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # name -> reason


def push(api: Api, folder: Path, out_dir: Path, options: dict[str, str], bars: Progress) -> Outcome:
    files = local.scan(folder)
    limits = api.limits()  # the first call: a wrong key or an unreachable server stops here
    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(out_dir, api.server, folder, options)
    outcome = Outcome()
    hashes = hash_all(files, bars)
    forget_lost_batches(api, state)
    todo, sent_before = [], 0
    for file in files:
        entry = state.files.get(file.relative)
        if entry is not None and entry.sha256 == hashes[file.relative]:
            sent_before += 1  # uploaded by an earlier run: followed below, never sent again
            continue
        if not local.fits_alone(file, limits["max_request_bytes"] - fields_size(options)):
            mb = limits["max_request_bytes"] / 2**20
            outcome.failures[file.relative] = f"not uploaded: larger than the server's {mb:.0f} MB request limit"
        else:
            todo.append(file)
    if sent_before:
        bars.console.print(f"resuming: {sent_before} files sent before, {len(todo)} to send", highlight=False)
    upload(api, todo, limits, state, bars)
    wanted = {f.relative for f in files} & set(state.files)
    stems = local.result_stems(f.relative for f in files)
    collect(api, state, wanted, Naming(lambda item: item["filename"], stems.__getitem__), out_dir, bars, outcome)
    return outcome


def fetch(api: Api, batch_id: str, out_dir: Path, bars: Progress) -> Outcome:
    """A batch's results (pushed by this client or not) written under the names it was sent with."""
    api.batch(batch_id)  # 404 for a batch this key may not see: before any folder is made
    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(out_dir, api.server, Path(f"batch:{batch_id}"))
    outcome = Outcome()
    follow(api, [batch_id], bars)
    keys = unique_names(items(api, batch_id))
    for key in keys.values():
        state.files.setdefault(key, Entry("", batch_id))
    stems = local.result_stems(keys.values())
    naming = Naming(lambda item: keys[item["task_id"]], stems.__getitem__)
    collect(api, state, set(keys.values()), naming, out_dir, bars, outcome, followed=True)
    return outcome


def unique_names(listed: list[dict]) -> dict[str, str]:
    """A path under the output folder for each task of a batch, from the name it was sent with (made safe);
    a name sent twice (two uploads called image.jpg) gets the task's id beside it the second time."""
    keys: dict[str, str] = {}
    for item in listed:
        name = local.safe_relative(item["filename"]) or "image"
        if name in keys.values():
            stem, dot, suffix = name.rpartition(".")
            name = f"{stem}-{item['task_id'][:8]}.{suffix}" if dot else f"{name}-{item['task_id'][:8]}"
        keys[item["task_id"]] = name
    return keys


@dataclass(frozen=True)
class Naming:
    """How a batch's item is known in the record (`key`), and where its result goes (`stem`, from the key)."""

    key: Callable[[dict], str]
    stem: Callable[[str], str]


def batch_size(limits: dict) -> int:
    """The most files one batch may hold: the request's limit and the account's quotas on one batch."""
    quotas = limits["quotas"]
    caps = [limits["max_files_per_request"], quotas["max_batch"], quotas["max_in_flight"], quotas["max_per_day"]]
    return max(1, min(c for c in caps if c is not None))


def hash_all(files: list[local.LocalFile], bars: Progress) -> dict[str, str]:
    bar = bars.add_task("checking", total=len(files), unit="files hashed")
    hashes = {}
    for file in files:
        hashes[file.relative] = local.content_hash(file.path)
        bars.advance(bar)
    return hashes


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
    while queue:
        run = queue.pop(0)
        if limits["quotas"]["max_in_flight"] is not None:
            bars.update(bar, unit="files, waiting for room")
            wait_for_room(api, len(run), limits["quotas"]["max_in_flight"], state)
            bars.update(bar, unit="files")
        parts = [Part(f.relative, f.path.read_bytes()) for f in run]
        try:
            accepted = api.submit_batch(parts, state.options, lambda part: bars.advance(bar))
        except ApiError as exc:
            bars.update(bar, completed=len(todo) - sum(len(r) for r in queue) - len(run))
            queue[:0] = retry_plan(exc, run)
            continue
        refused = {r["filename"]: f"{r['message']} ({r['code']})" for r in accepted.get("refused", [])}
        for file, part in zip(run, parts, strict=True):
            entry = Entry(local.sha256_of(part.data), accepted["batch_id"], error=refused.get(file.relative))
            state.files[file.relative] = entry
        state.save()  # after each batch: a run stopped later sends none of these again


def wait_for_room(api: Api, files: int, cap: int, state: PushState) -> None:
    """Until `files` more images fit under the account's quota in flight: held on this push's oldest
    unfinished batch (answered as soon as one of its images finishes), not polled."""
    while api.limits()["usage"]["in_flight"] + files > cap:
        for batch_id in state.batches():
            batch = api.batch(batch_id)
            if batch["state"] != "done":
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


def collect(
    api: Api,
    state: PushState,
    wanted: set[str],
    naming: Naming,
    out_dir: Path,
    bars: Progress,
    outcome: Outcome,
    followed: bool = False,
) -> None:
    """Follow the batches of the `wanted` files, then write each one's result (or record its failure)."""
    open_files = {n for n in wanted if not state.files[n].error and not done_output(state.files[n], out_dir)}
    batch_ids = list(dict.fromkeys(state.files[n].batch_id for n in sorted(open_files)))
    if batch_ids and not followed:
        follow(api, batch_ids, bars)
    bar = bars.add_task("download", total=len(open_files), unit="results")
    for batch_id in batch_ids:
        for item in items(api, batch_id):
            name = naming.key(item)
            if name not in open_files or state.files[name].batch_id != batch_id:
                continue
            entry = state.files[name]
            if item["state"] == "success" and item.get("result_url"):
                try:
                    mine = entry.output.__eq__ if entry.output else (lambda _: False)
                    entry.output = write_result(api, item, out_dir, naming.stem(name), mine)
                except ClientError as exc:
                    outcome.failures[name] = download_error(exc)
            else:
                entry.error = item_failure(item)
            bars.advance(bar)
        state.save()
    for name in sorted(wanted):
        entry = state.files[name]
        if entry.error:
            outcome.failures[name] = entry.error
        elif done_output(entry, out_dir):
            outcome.written += 1


def done_output(entry: Entry, out_dir: Path) -> bool:
    return entry.output is not None and (out_dir / entry.output).is_file()
