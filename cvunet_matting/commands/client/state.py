"""The small record a push keeps in its output folder, so a second run resumes instead of starting over:
which file (by content hash) went in which batch, and which results are already written. Written whole
to a temporary file and renamed over the old one, so a run killed at any moment leaves the last record."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ClientError

STATE_NAME = ".cvunet-client.json"
VERSION = 1


@dataclass
class Entry:
    sha256: str
    batch_id: str  # "" for a file refused with its whole batch (no image of it was accepted): no batch made
    output: str | None = None  # the result's path under the output folder, once written
    error: str | None = None  # why the server failed it (refused on arrival too)
    replaces: str | None = None  # the result of the file's earlier content, which this one's may overwrite

    def owns(self, relative: str) -> bool:
        """Whether the file at `relative` under the output folder is this client's to overwrite."""
        return relative in (self.output, self.replaces)

    def as_json(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class PushState:
    path: Path
    server: str
    folder: str
    options: dict[str, str] = field(default_factory=dict)  # the form's output options every batch was sent with
    files: dict[str, Entry] = field(default_factory=dict)  # by the file's path under the folder
    # The batch being sent: its files' hashes by name, and the server's time before it ("since"). A run
    # stopped between the server's answer and this record's next save finds its batch by them.
    sending: dict | None = None

    def batches(self) -> list[str]:
        """The batches files were uploaded in, in the order first seen."""
        return list(dict.fromkeys(e.batch_id for e in self.files.values() if e.batch_id))

    def save(self) -> None:
        record = {
            "version": VERSION,
            "server": self.server,
            "folder": self.folder,
            "options": self.options,
            "files": {name: entry.as_json() for name, entry in self.files.items()},
            **({"sending": self.sending} if self.sending else {}),
        }
        fd, temporary = tempfile.mkstemp(prefix=".cvunet-client.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(record, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def load_state(out_dir: Path, server: str, folder: Path, options: dict[str, str] | None = None) -> PushState:
    """The output folder's record (new when there is none); refused when it belongs to another push: another
    folder, server or output options (its results would be a mix of two)."""
    path = out_dir / STATE_NAME
    state = PushState(path, server, str(folder), dict(options or {}))
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return state
    except (OSError, ValueError) as exc:
        raise ClientError(f"{path} is unreadable ({exc}): remove it to start over") from None
    if not isinstance(record, dict) or record.get("version") != VERSION:
        raise ClientError(f"{path} was written by another version of this client: remove it to start over")
    if record.get("files") == {} and not record.get("sending"):
        return state  # nothing was sent (a run refused at its first batch): nothing binds the next one
    for what, mine in (("server", server), ("folder", str(folder)), ("options", state.options)):
        if record.get(what, {} if what == "options" else None) != mine:
            raise ClientError(
                f"{out_dir} holds the results of a push of {record.get('folder')} to {record.get('server')}"
                f" with options {record.get('options') or 'none'}: choose another --out"
            )
    try:
        state.files = {name: Entry(**entry) for name, entry in record["files"].items()}
        state.sending = record.get("sending")
        if state.sending is not None and not isinstance(state.sending.get("files"), dict):
            raise TypeError
    except (KeyError, TypeError, AttributeError):
        raise ClientError(f"{path} is damaged: remove it to start over") from None
    return state
