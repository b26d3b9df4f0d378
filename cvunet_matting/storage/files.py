"""Files on the shared root: inputs by content hash, outputs written atomically, never overwritten."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO


class StorageAway(Exception):
    """The data root cannot be written now (read-only, full, a lost mount): a hiccup the caller waits
    out within CVUNET_STORAGE_RETRY_S (tasks.py), never a verdict on the work itself."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=1)
def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread, for a moment)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022


def public_mode() -> int:
    """What a plain open() would give a new file: results are for whoever serves or reads them."""
    return 0o666 & ~_umask()


@contextmanager
def atomic_file(path: Path, private: bool = False, temp_prefix: str | None = None) -> Iterator[BinaryIO]:
    """A file written in place under a temporary name (`temp_prefix`, default `.NAME.`, then 8 random
    characters and `.part`), synced and renamed over `path` when the block ends without error: readers
    never see a partial file. Mode 0600 if `private`, else the umask's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = temp_prefix or f".{path.name}."
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".part")  # 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if not private:
                os.fchmod(fh.fileno(), public_mode())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes, private: bool = False, temp_prefix: str | None = None) -> Path:
    with atomic_file(path, private, temp_prefix) as fh:
        fh.write(data)
    return path


def create_new(path: Path, data: bytes) -> Path:
    """Write `data` to `path`, or to `stem-1.ext`, `stem-2.ext`... if taken: never overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, n = path, 0
    while True:
        try:
            # O_EXCL reserves the name, so two writers cannot both pick it.
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            n += 1
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
            continue
        try:
            return write_atomic(candidate, data)
        except BaseException:
            candidate.unlink(missing_ok=True)
            raise


def alpha_path(result: Path) -> Path:
    """Where the alpha matte derived from the cut-out at `result` is kept (alpha_matte): beside it, as
    `.NAME.alpha.png`. No output takes such a name (naming.safe_stem strips leading dots, and the
    temporary files of atomic_file end in `.part`), so the matte can neither overwrite a result nor be
    overwritten by one; retention removes it with its result."""
    return result.with_name(f".{result.name}.alpha.png")


def raw_matte_path(result: Path) -> Path:
    """Where the model's raw matte of the cut-out at `result` is kept (image/rendering.py): beside it,
    as `.NAME.raw.png`, hidden and never an output's name for the same reasons as alpha_path. A
    re-render reads it instead of running the model; retention and deleting remove it with its result."""
    return result.with_name(f".{result.name}.raw.png")


def result_files(result: Path) -> tuple[Path, Path, Path]:
    """Every file a finished task keeps: its result first, then what lies beside it (the raw matte the
    worker wrote, the alpha matte the web derived). Removers go in this order (purging.py)."""
    return result, alpha_path(result), raw_matte_path(result)


def new_run_dir(parent: Path, now: datetime | None = None) -> Path:
    """A fresh `outputs_YYYYMMDDHHMMSS` folder under `parent` (suffixed if that second is taken)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    candidate, n = parent / f"outputs_{stamp}", 0
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
            candidate = parent / f"outputs_{stamp}-{n}"


class Storage:
    """The shared data root (NFS in production): `inputs/aa/<sha256>`, `outputs/...`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.inputs = self.root / "inputs"
        self.outputs = self.root / "outputs"

    def input_path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a storage key: {key!r}")
        return self.inputs / key[:2] / key

    def put_input(self, data: bytes) -> str:
        """Store upload bytes under their sha256; the same bytes twice are stored once."""
        key = sha256_bytes(data)
        path = self.input_path(key)
        if not path.exists():
            write_atomic(path, data, private=True)  # uploads are the service's, not the world's
        return key

    def read_input(self, key: str) -> bytes:
        return self.input_path(key).read_bytes()

    def new_run_dir(self) -> Path:
        return new_run_dir(self.outputs)

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))

    def resolve(self, relative: str) -> Path:
        """A stored relative path back to a file, refusing anything that escapes the root."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"path escapes the storage root: {relative!r}")
        return path

    def writable(self, folder: Path | None = None) -> bool:
        """Whether a file can be created, written and removed in `folder` (default: the outputs)."""
        folder = folder or self.outputs
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe."):
                return True
        except OSError:
            return False
