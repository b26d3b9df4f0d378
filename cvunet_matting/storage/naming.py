"""Safe, unique file names for user-supplied names."""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePath

_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)
# A file name is at most 255 bytes, and storage.write_atomic writes `.NAME.XXXXXXXX.part` first
# (15 bytes more). Leave room for a `-12345` suffix and a `.webp` extension as well.
NAME_MAX_BYTES = 255
TEMP_OVERHEAD = len(".") + len(".XXXXXXXX.part")
STEM_MAX_BYTES = NAME_MAX_BYTES - TEMP_OVERHEAD - len("-12345") - len(".webp")


def cut_to_bytes(text: str, limit: int) -> str:
    """The longest prefix of `text` whose UTF-8 encoding fits in `limit` bytes (never half a character)."""
    return text.encode()[:limit].decode(errors="ignore")


def safe_stem(filename: str, fallback: str = "image") -> str:
    """The last path component's stem, without separators, control characters or leading dots."""
    name = PurePath(filename.replace("\\", "/")).name
    stem = unicodedata.normalize("NFC", name.rsplit(".", 1)[0] if "." in name else name)
    stem = cut_to_bytes(_UNSAFE.sub("_", stem).strip(" ._")[:120], STEM_MAX_BYTES).rstrip(" ._")
    return stem or fallback


def unique_names(filenames: list[str], extension: str) -> list[str]:
    """One output name per input, never two alike (case-insensitive): `a.png`, `a-1.png`...

    Each name is its stem, or else the stem with the lowest suffix `-1`, `-2`... not yet taken. The
    lowest free suffix of a stem only grows as names are taken, so the search for a stem's next one
    resumes where its last ended: linear in the number of names (a batch of 10,000 alike is 10,000
    steps, not 50 million)."""
    taken: set[str] = set()
    next_suffix: dict[str, int] = {}  # a stem (lower case) that has been taken bare -> its next suffix to try
    names = []
    for filename in filenames:
        stem = safe_stem(filename)
        candidate = f"{stem}{extension}"
        if candidate.lower() in taken:
            key = stem.lower()
            n = next_suffix.get(key, 1)
            while (candidate := f"{stem}-{n}{extension}").lower() in taken:
                n += 1
            next_suffix[key] = n + 1
        taken.add(candidate.lower())
        names.append(candidate)
    return names
