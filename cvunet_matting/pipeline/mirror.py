"""Mirror task events into PostgreSQL; while it is unreachable, keep them in a spool and replay later.

A failed write never fails the task: the event goes to a JSON-lines spool file, replayed in order
(by this process or any other) as soon as the database answers again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path

import psycopg2

from cvunet_matting import db
from cvunet_matting.db import reads, writes

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


Query = tuple[str, tuple]  # sql, params


def _write(events: list[dict]) -> None:
    with db.autocommit() as cur:
        writes.apply_events(cur, events)


def _write_then_read(events: list[dict], query: Query) -> dict | None:
    with db.autocommit() as cur:
        return writes.apply_events(cur, events, then=query)


def _read(query: Query) -> dict | None:
    with db.autocommit() as cur:
        return reads.first_row(cur, query)


class Mirror:
    def __init__(
        self,
        spool_dir: Path,
        write: Callable[[list[dict]], None] = _write,
        write_then_read: Callable[[list[dict], Query], dict | None] = _write_then_read,
        read: Callable[[Query], dict | None] = _read,
    ):
        self.spool_dir = Path(spool_dir)
        self.write = write
        self.write_then_read = write_then_read
        self.read = read
        self.own_file = self.spool_dir / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        self._lock = threading.Lock()
        self._background: ThreadPoolExecutor | None = None
        self._last_later: Future | None = None

    def record_later(self, event: dict) -> None:
        """Record `event` from a background thread, while the task goes on (a start: the model runs
        meanwhile). A process killed before the write loses only this event; the task's next event
        (or its redelivery's start) overwrites the row anyway. Events recorded later keep their order.
        """
        event.setdefault("at", now_iso())
        if self._background is None:
            self._background = ThreadPoolExecutor(1, thread_name_prefix="mirror")
        self._last_later = self._background.submit(self._record_logged, event)

    def _record_logged(self, event: dict) -> None:
        try:
            self._record_now(event)
        except Exception:  # nobody waits on this thread: say what was lost
            log.exception("could not mirror event %s", event)

    def record(self, event: dict) -> None:
        """Write `event` now if the spool is empty and the database answers, else spool it."""
        event.setdefault("at", now_iso())
        self.wait_background()  # an event recorded earlier in the background goes first
        self._record_now(event)

    def record_then_read(self, event: dict, query: Query) -> dict | None:
        """Record `event` now, as `record` does, and run the read-only `query` after it in the same
        round trip: its first row. A task's start and its result lookup go together this way.

        When the event cannot be written now (the spool is not empty, or the database does not
        answer) it is spooled as `record` would, and the query runs alone: it raises psycopg2.Error
        or OSError if the database is away, which the caller handles as it would for the query alone."""
        return self.record_then_read_told(event, query)[1]

    def record_then_read_told(self, event: dict, query: Query) -> tuple[bool, dict | None]:
        """record_then_read, and whether the event was committed (False: it was spooled)."""
        event.setdefault("at", now_iso())
        self.wait_background()  # an event recorded earlier in the background goes first
        with self._lock:
            if not self.pending() or self.flush():
                try:
                    return True, self.write_then_read([event], query)
                except (psycopg2.Error, OSError) as exc:
                    log.warning("postgres mirror unavailable, spooling event: %s", exc)
            self._append(event)
        return False, self.read(query)

    def wait_background(self) -> None:
        """Return once every event recorded in the background is written (or spooled)."""
        if self._last_later is not None:
            wait([self._last_later])

    def _record_now(self, event: dict) -> None:
        with self._lock:
            if not self.pending() or self.flush():
                try:
                    self.write([event])
                    return
                except (psycopg2.Error, OSError) as exc:
                    log.warning("postgres mirror unavailable, spooling event: %s", exc)
            self._append(event)

    def pending(self) -> list[Path]:
        return sorted(self.spool_dir.glob("*.jsonl")) if self.spool_dir.exists() else []

    def _append(self, event: dict) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        while True:
            with open(self.own_file, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                # A replayer may have removed the file between open and lock: write to the new one.
                if not self.own_file.exists() or os.fstat(fh.fileno()).st_ino != os.stat(self.own_file).st_ino:
                    continue
                fh.write(json.dumps(event, default=str) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
                return

    def flush(self) -> bool:
        """Replay every spool file in order; True when nothing is left waiting."""
        return all(self._replay(path) for path in self.pending())

    def _replay(self, path: Path) -> bool:
        try:
            fh = open(path, "r+")  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError:  # another process replayed it meanwhile
            return True
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            if not path.exists():
                return True
            events = [json.loads(line) for line in fh if line.strip()]
            try:
                self.write(events)
            except (psycopg2.Error, OSError):
                return False
            path.unlink(missing_ok=True)
            log.info("replayed %d spooled events from %s", len(events), path.name)
            return True

    def start_flusher(self, interval: float = 5.0) -> threading.Thread:
        """A daemon thread that replays the spool, so events land even when no new task runs."""

        def loop() -> None:
            stop = threading.Event()
            while not stop.wait(interval):
                if self.pending():
                    with self._lock:
                        self.flush()

        thread = threading.Thread(target=loop, name="mirror-flusher", daemon=True)
        thread.start()
        return thread


_mirror: Mirror | None = None


def get_mirror() -> Mirror:
    global _mirror
    if _mirror is None or _mirror.own_file.name != f"{socket.gethostname()}-{os.getpid()}.jsonl":
        from cvunet_matting.config import get_settings

        _mirror = Mirror(get_settings().spool_dir)
    return _mirror
