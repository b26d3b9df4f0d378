"""The alpha matte of a stored cut-out, as a grey PNG: what /api/v1/tasks/<id>/alpha serves."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import InputError


def alpha_png(path: Path) -> bytes:
    """Decode the stored RGBA result and encode its alpha channel alone (an 8-bit grey PNG)."""
    pixels = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] != 4:
        raise InputError("the stored result has no alpha channel", code="not_found")
    _, buffer = cv2.imencode(".png", pixels[..., 3])  # an 8-bit grey PNG always encodes
    return buffer.tobytes()
