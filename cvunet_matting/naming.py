"""Safe, unique file names for user-supplied names."""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePath

_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)


def safe_stem(filename: str, fallback: str = "image") -> str:
    """The last path component's stem, without separators, control characters or leading dots."""
    name = PurePath(filename.replace("\\", "/")).name
    stem = unicodedata.normalize("NFC", name.rsplit(".", 1)[0] if "." in name else name)
    stem = _UNSAFE.sub("_", stem).strip(" ._")[:120]
    return stem or fallback


def unique_names(filenames: list[str], extension: str) -> list[str]:
    """One output name per input, never two alike (case-insensitive): `a.png`, `a-1.png`..."""
    taken: set[str] = set()
    names = []
    for filename in filenames:
        stem = safe_stem(filename)
        candidate, n = f"{stem}{extension}", 0
        while candidate.lower() in taken:
            n += 1
            candidate = f"{stem}-{n}{extension}"
        taken.add(candidate.lower())
        names.append(candidate)
    return names
