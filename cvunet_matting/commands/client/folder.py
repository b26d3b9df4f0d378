"""The local side of a push: the folder's files, their content hashes, the names their results get (the
input tree mirrored), and batches cut to what one request may hold."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .api import Part, closing_size, part_size
from .errors import ClientError

HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalFile:
    relative: str  # the path under the folder, with '/': also its name on the server
    path: Path
    size: int


def scan(folder: Path) -> list[LocalFile]:
    """Every regular file under `folder`, hidden ones (.DS_Store, .git) and symlinked folders left out."""
    if not folder.is_dir():
        raise ClientError(f"no such folder: {folder}")
    found = []
    for root, dirs, names in os.walk(folder, onerror=_unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root, name)
            if name.startswith(".") or not path.is_file():
                continue
            relative = path.relative_to(folder).as_posix()
            found.append(LocalFile(relative, path, path.stat().st_size))
    return found


def _unreadable(exc: OSError) -> None:
    raise ClientError(f"cannot read {exc.filename}: {exc.strerror}")


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def result_stems(relatives: Iterable[str]) -> dict[str, str]:
    """Each input's result path without its extension: the same folders and stem, or the whole name
    where two inputs of one folder share a stem (a.jpg and a.png would both give a.png)."""
    relatives = list(relatives)
    stems = Counter(str(PurePosixPath(r).with_suffix("")) for r in relatives)
    return {
        r: r if stems[str(PurePosixPath(r).with_suffix(""))] > 1 else str(PurePosixPath(r).with_suffix(""))
        for r in relatives
    }


def safe_relative(name: str) -> str:
    """A server-given file name as a path under the output folder: no absolute path, no '..', no
    backslash tricks; '' when nothing is left."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(p for p in parts if p.isprintable())


def batches(files: list[LocalFile], max_files: int, max_bytes: int) -> Iterator[list[LocalFile]]:
    """`files` in order, cut into runs that fit one request (count and bytes, the form's framing counted)."""
    run: list[LocalFile] = []
    size = closing_size()
    for file in files:
        cost = request_cost(file)
        if run and (len(run) >= max_files or size + cost > max_bytes):
            yield run
            run, size = [], closing_size()
        run.append(file)
        size += cost
    if run:
        yield run


def request_cost(file: LocalFile) -> int:
    """The bytes a file takes in a batch request."""
    return part_size(Part(file.relative, b"")) + file.size


def fits_alone(file: LocalFile, max_bytes: int) -> bool:
    return request_cost(file) + closing_size() <= max_bytes


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
