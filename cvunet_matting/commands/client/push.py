"""`client push` and `client get`: a local folder uploaded in batches the server accepts, resumed from the
output folder's record, followed to the end, and its results written as a mirror of the input tree."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import Progress

from . import folder as local
from .api import Api, fields_size
from .errors import ClientError
from .follow import download_error, follow, item_failure, items, write_result
from .sending import adopt_unrecorded, forget_lost_batches, upload
from .state import Entry, PushState, load_state

# Results fetched at once: each is a small request, so latency, not bandwidth, bounds one at a time; well
# under the server's downloads per user (CVUNET_DOWNLOADS_PER_USER, 16 by default).
DOWNLOADS_AT_ONCE = 4


@dataclass
class Outcome:
    written: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # name -> reason


def push(
    api: Api, folder: Path, out_dir: Path, options: dict[str, str], bars: Progress, retry_failed: bool = False
) -> Outcome:
    """The folder's files sent (those an earlier run sent skipped; its failed ones too unless
    `retry_failed`), followed, and their results written under `out_dir`."""
    files = local.scan(folder)
    limits = api.limits()  # the first call: a wrong key or an unreachable server stops here
    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(out_dir, api.server, folder, options)
    outcome = Outcome()
    hashes = hash_all(files, bars)
    adopt_unrecorded(api, state)
    forget_lost_batches(api, state)
    todo, sent_before = [], 0
    for file in files:
        entry = state.files.get(file.relative)
        if entry is not None and entry.sha256 == hashes[file.relative] and not (retry_failed and entry.error):
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


def hash_all(files: list[local.LocalFile], bars: Progress) -> dict[str, str]:
    bar = bars.add_task("checking", total=len(files), unit="files hashed")
    hashes = {}
    for file in files:
        hashes[file.relative] = local.content_hash(file.path)
        bars.advance(bar)
    return hashes


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
        ready = []
        for item in items(api, batch_id):
            name = naming.key(item)
            if name not in open_files or state.files[name].batch_id != batch_id:
                continue
            if item["state"] == "success" and item.get("result_url"):
                ready.append((name, item))
            else:
                state.files[name].error = item_failure(item)
                bars.advance(bar)
        with ThreadPoolExecutor(DOWNLOADS_AT_ONCE) as pool:
            writes = {
                pool.submit(write_result, api, item, out_dir, naming.stem(name), state.files[name].owns): name
                for name, item in ready
            }
            for done in as_completed(writes):
                try:
                    state.files[writes[done]].output = done.result()
                except ClientError as exc:
                    outcome.failures[writes[done]] = download_error(exc)
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
