"""The alpha matte of a stored cut-out, as a grey PNG: what /api/v1/tasks/<id>/alpha serves.

Decoding a cut-out takes its whole RGBA size in memory (a 7000x7000 result, 208 KB on disk, took
~250 MB and 0.45 s), so the matte is derived once, on its first request, into a file beside the result
(storage.alpha_path) and served from disk afterwards; retention removes it with the result. The
derivations a web process runs at once are bounded (CVUNET_ALPHA_DERIVATIONS): a request that finds
every slot taken waits up to WAIT_S for one, then is told to come back (Busy: 503 with Retry-After).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import cv2
import numpy as np

from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.storage.files import alpha_path, write_atomic

log = logging.getLogger(__name__)

WAIT_S = 2.0  # how long a request waits for a free slot: it holds one of its process's gunicorn threads
RETRY_AFTER_S = 1  # a busy answer's Retry-After: one derivation takes well under a second up to 50 MP
TEMP_PREFIX = ".alpha."  # a short temporary name: `.NAME.alpha.png` plus atomic_file's own could pass 255 bytes


def alpha_png(path: Path) -> bytes:
    """Decode the stored RGBA result and encode its alpha channel alone (an 8-bit grey PNG)."""
    pixels = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] != 4:
        raise InputError("the stored result has no alpha channel", code=ErrorCode.NOT_FOUND)
    _, buffer = cv2.imencode(".png", pixels[..., 3])  # an 8-bit grey PNG always encodes
    return buffer.tobytes()


class Busy(Exception):
    """Every derivation slot of this process stayed taken for WAIT_S: ask again after RETRY_AFTER_S."""

    retry_after = RETRY_AFTER_S


def _current(matte: Path, result: Path) -> bool:
    """Whether the stored matte exists and is not older than its result (a result written again,
    which no path does today, would be derived again rather than served a stale matte)."""
    try:
        return matte.stat().st_mtime_ns >= result.stat().st_mtime_ns
    except FileNotFoundError:
        return False


class Derivations:
    """One web process's alpha mattes: derived at most `slots` at a time, each stored once."""

    def __init__(self, slots: int):
        self.slots = max(1, slots)
        self._free = threading.BoundedSemaphore(self.slots)

    def matte(self, result: Path) -> Path | bytes:
        """The matte of the RGBA cut-out at `result`: its stored file, derived first if there is none.
        The bytes themselves when they could not be stored (a full or read-only disk): served anyway,
        and derived again next time. Raises Busy, or InputError when the result is gone or has no alpha."""
        stored = alpha_path(result)
        if _current(stored, result):
            return stored
        if not self._free.acquire(timeout=WAIT_S):
            raise Busy(f"{self.slots} alpha mattes are being derived in this process")
        try:
            if _current(stored, result):  # derived by the request that held the slot before this one
                return stored
            return self._derive(result, stored)
        finally:
            self._free.release()

    @staticmethod
    def _derive(result: Path, stored: Path) -> Path | bytes:
        try:
            data = alpha_png(result)
        except FileNotFoundError:  # retention removed it since the row was read
            raise InputError("the file is no longer in storage", code=ErrorCode.NOT_FOUND) from None
        try:
            write_atomic(stored, data, temp_prefix=TEMP_PREFIX)  # concurrent first requests: the last rename wins
        except OSError as exc:
            log.warning("alpha matte not stored, served from memory: %s: %s", stored, exc.strerror or exc)
            return data
        if not result.exists():
            # Retention removed the result (and looked for the matte) while it was derived: a matte
            # left now would never be removed. Retention unlinks the result first, so one of us sees it.
            stored.unlink(missing_ok=True)
            raise InputError("the file is no longer in storage", code=ErrorCode.NOT_FOUND)
        return stored
