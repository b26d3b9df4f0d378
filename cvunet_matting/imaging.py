"""Decoding untrusted image bytes safely, and encoding cut-outs (OpenCV; Pillow only to probe headers)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError

SUPPORTED_FORMATS = frozenset({"jpeg", "png", "webp", "bmp", "tiff", "gif"})
MAGIC = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
)
Image.MAX_IMAGE_PIXELS = None  # our own max_pixels check runs first; Pillow's would only warn


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def sniff_extension(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((ext for magic, ext in MAGIC if data.startswith(magic)), None)


def _looks_like_svg(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in head


def probe(data: bytes, max_pixels: int) -> ImageInfo:
    """Format and size from the header alone, refusing what must not be decoded."""
    if not data:
        raise InputError("the file is empty", code="empty")
    if _looks_like_svg(data):
        raise InputError("SVG images are not supported: send a raster image (PNG, JPEG, WebP...)", code="svg")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            fmt, (width, height) = (image.format or "").lower(), image.size
    except UnidentifiedImageError:
        raise InputError("the file is not an image in a known format", code="not_an_image") from None
    except Exception as exc:  # Pillow's parsers raise many types on malformed headers
        raise InputError(f"the image header is unreadable: {exc}", code="truncated") from None
    if fmt == "mpo":
        fmt = "jpeg"  # multi-picture JPEG from phones: the first picture is a plain JPEG
    if fmt not in SUPPORTED_FORMATS:
        raise InputError(f"{fmt.upper() or 'this'} images are not supported", code="unsupported_format")
    if width * height > max_pixels:
        raise InputError(
            f"the image is {width}x{height} ({width * height:,} pixels), over the limit of {max_pixels:,} pixels",
            code="too_many_pixels",
        )
    return ImageInfo(fmt, width, height)


def _check_complete(data: bytes, fmt: str) -> None:
    """OpenCV fills a truncated JPEG with grey without a word: look for the end markers ourselves."""
    tail = data.rstrip(b"\x00")[-64:]
    if fmt == "jpeg" and b"\xff\xd9" not in tail:
        raise InputError("the JPEG file is truncated (no end-of-image marker)", code="truncated")
    if fmt == "png" and b"IEND" not in tail:
        raise InputError("the PNG file is truncated (no IEND chunk)", code="truncated")


def _to_rgb8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = cv2.normalize(pixels, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    if pixels.shape[2] == 4:
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def _decode_with_pillow(data: bytes) -> np.ndarray:
    """GIF (first frame) and whatever OpenCV's build cannot read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                image.seek(0)
                return np.ascontiguousarray(np.asarray(image.convert("RGB")))
    except Exception as exc:  # as in probe(): any parser failure means corrupt data
        raise InputError(f"the image data is corrupt: {exc}", code="truncated") from None


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """Untrusted bytes -> HxWx3 uint8 RGB with EXIF orientation applied; InputError for anything bad."""
    info = probe(data, max_pixels)
    _check_complete(data, info.format)
    if info.format == "gif":
        return _decode_with_pillow(data)
    buffer = np.frombuffer(data, np.uint8)
    try:
        pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        if pixels is not None and info.format == "jpeg":
            pixels = cv2.imdecode(buffer, cv2.IMREAD_COLOR)  # applies EXIF orientation, converts CMYK
    except cv2.error:
        pixels = None
    if pixels is None:
        return _decode_with_pillow(data)
    rgb = np.ascontiguousarray(_to_rgb8(pixels))
    if rgb.shape[0] * rgb.shape[1] != info.width * info.height:
        raise InputError("the decoded size does not match the header", code="truncated")
    return rgb


# The output side lives in encoding.py; re-exported so callers import images from one place.
from .encoding import OutputOptions, encode, parse_color  # noqa: E402

__all__ = [
    "ImageInfo",
    "OutputOptions",
    "SUPPORTED_FORMATS",
    "decode",
    "encode",
    "parse_color",
    "probe",
    "sniff_extension",
]
