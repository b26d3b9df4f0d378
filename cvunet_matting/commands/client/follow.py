"""After the upload: the batches followed to their end by long-polls (one request held until an image
finishes, not a busy loop), then their results written into the output folder under the input's names."""

from __future__ import annotations

import mimetypes
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.progress import Progress

from .api import Api
from .errors import ApiError, ClientError

HOLD_S = 30  # the API's longest ?wait=
MIN_ROUND_S = 0.5  # a bar needs no more than two updates a second: fast batches are asked less often
OTHERS_EVERY_S = 5.0  # the batches behind the oldest, read at once (not held): this often, or when it ends
PAGE = 1000  # the API's most items per status page
EXTENSIONS = {"image/png": ".png", "image/webp": ".webp", "image/jpeg": ".jpg"}


def finished(batch: dict) -> int:
    return batch["done"] + batch["failed"]


def follow(api: Api, batch_ids: list[str], bars: Progress) -> dict[str, dict]:
    """Each batch's final status (without items), the processing bar moved as images finish."""
    status = {b: api.batch(b) for b in batch_ids}
    bar = bars.add_task("processing", total=None, unit="images")

    def show() -> None:
        all_ = sum(finished(s) + s["pending"] for s in status.values())
        bars.update(bar, total=all_, completed=sum(finished(s) for s in status.values()))

    show()
    others_read = time.monotonic()
    while waiting := [b for b in batch_ids if status[b]["state"] != "done"]:
        started = time.monotonic()
        first = waiting[0]  # the oldest: the queue serves it first
        status[first] = api.batch(first, wait=HOLD_S, seen=finished(status[first]))
        if started - others_read >= OTHERS_EVERY_S or status[first]["state"] == "done":
            for other in waiting[1:]:
                status[other] = api.batch(other)
            others_read = time.monotonic()
        show()
        time.sleep(max(0.0, MIN_ROUND_S - (time.monotonic() - started)))
    return status


def items(api: Api, batch_id: str) -> list[dict]:
    """Every item of a batch, page by page."""
    listed: list[dict] = []
    while True:
        page = api.batch(batch_id, offset=len(listed), limit=PAGE)["items"]
        listed += page
        if len(page) < PAGE:
            return listed


def extension(content_type: str | None) -> str:
    media = (content_type or "").split(";")[0].strip()
    return EXTENSIONS.get(media) or mimetypes.guess_extension(media) or ".bin"


def write_result(api: Api, item: dict, out_dir: Path, stem: str, mine: Callable[[str], bool]) -> str:
    """The item's result downloaded to `stem` + its extension under `out_dir`; that path, relative.

    A file there that this client did not write (`mine` says; the same bytes count as its own: a run
    stopped before its record was saved) is left alone: the item fails instead."""
    answer = api.download(item["result_url"])
    relative = stem + extension(answer.headers.get("Content-Type"))
    target = out_dir / relative
    if target.exists() and not mine(relative) and target.read_bytes() != answer.body:
        raise ClientError(f"{target} exists and was not written by this client: left alone")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".part.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(answer.body)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return relative


def item_failure(item: dict) -> str:
    code = item.get("error_code")
    reason = item.get("error") or ("expired: retention removed it" if item.get("expired") else "no result")
    return f"{reason} ({code})" if code else reason


def download_error(exc: ClientError) -> str:
    return exc.message if isinstance(exc, ApiError) else str(exc)
