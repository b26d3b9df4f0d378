"""The input's own transparency: imaging.decode() keeps the colours only, this reads the alpha.

Read again from the same bytes, and only when the header says the image has an alpha channel or a
transparent colour (PNG, WebP, TIFF, GIF, BMP can); JPEG never does. Orientation follows decode():
OpenCV's fast path when no EXIF orientation applies, Pillow's exif_transpose otherwise.
"""

from __future__ import annotations

import io
import logging
import warnings

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps

log = logging.getLogger(__name__)

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_FAST_FORMATS = {"PNG", "WEBP"}  # OpenCV reads their alpha channel as Pillow does


def _opencv_alpha(data: bytes) -> np.ndarray | None:
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.ndim != 3 or pixels.shape[2] != 4:
        return None
    alpha = pixels[..., 3]
    if alpha.dtype == np.uint16:
        alpha = ((alpha.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return alpha if alpha.dtype == np.uint8 else None


def _pillow_alpha(img: Image.Image) -> np.ndarray:
    img = ImageOps.exif_transpose(img)
    if img.mode not in {"RGBA", "LA"}:
        img = img.convert("RGBA")
    return np.asarray(img.getchannel("A"))


def _orientation(img: Image.Image) -> int:
    if img.format == "PNG" and "exif" not in img.info:  # PNG's getexif() would decode the pixels
        return 1
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a broken EXIF block: decode() took the image as it is stored
        return 1


def read_alpha(data: bytes, shape: tuple[int, int]) -> np.ndarray | None:
    """The input's alpha (H x W uint8) when it has one that is not fully opaque, else None."""
    try:
        with warnings.catch_warnings(action="ignore"), Image.open(io.BytesIO(data)) as img:
            if img.mode not in _ALPHA_MODES and "transparency" not in img.info:
                return None
            alpha = None
            if img.format in _FAST_FORMATS and _orientation(img) == 1:
                alpha = _opencv_alpha(data)
            if alpha is None or alpha.shape != shape:
                alpha = _pillow_alpha(img)
    except Exception as exc:  # decode() accepted these bytes: keep the image, say why its alpha was lost
        log.warning("input alpha unreadable, taken as opaque: %s", exc)
        return None
    if alpha.shape != shape:
        log.warning("input alpha is %s, the image %s: taken as opaque", alpha.shape, shape)
        return None
    return None if alpha.min() == 255 else np.ascontiguousarray(alpha)
