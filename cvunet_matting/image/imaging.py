"""Untrusted bytes in, RGB pixels out: probe the header, refuse bombs and broken files, then decode."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps

from cvunet_matting.errors import ErrorCode, InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "INPUT_FORMATS",
    "SUPPORTED_FORMATS",
    "ImageInfo",
    "decode",
    "input_media_type",
    "probe",
    "sniff_extension",
]

# probe() checks our own max_pixels before any decoding; Pillow's global guard would only warn
# (an error under our tests) or refuse with a limit that is not ours.
Image.MAX_IMAGE_PIXELS = None

# The input formats we accept: our format name -> (the extension we store it under, its media type).
INPUT_FORMATS = {
    "jpeg": (".jpg", "image/jpeg"),
    "png": (".png", "image/png"),
    "webp": (".webp", "image/webp"),
    "bmp": (".bmp", "image/bmp"),
    "tiff": (".tif", "image/tiff"),
    "gif": (".gif", "image/gif"),
}
SUPPORTED_FORMATS = frozenset(INPUT_FORMATS)
_MEDIA_TYPES = dict(INPUT_FORMATS.values())
# File name endings taken when a folder is walked (files named explicitly are always tried).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
)
_NAMES = ", ".join(sorted(name.upper() for name in SUPPORTED_FORMATS))
_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_TEXT_BYTES = bytes(range(32, 256)) + b"\t\n\r\f\b"
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # the first marker after entropy-coded data
_FILL = re.compile(rb"\xff+")  # a run of fill bytes before a marker, skipped at C speed
# Junk is refused before any per-byte parsing (Pillow reads JPEG markers one byte at a time): a real
# JPEG reaches its frame header within a few dozen segments and a handful of fill bytes.
JPEG_MAX_SEGMENTS = 512
JPEG_MAX_FILL = 1024
_RGB_FLAG: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV 4.10 on
_FILL_BOUNDED = re.compile(rb"\xff{1,%d}" % (JPEG_MAX_FILL + 1))


@dataclass(frozen=True)
class ImageInfo:
    """What the header says (size as displayed, after EXIF orientation)."""

    format: str
    width: int
    height: int


def _quiet() -> warnings.catch_warnings:
    """Pillow warns about odd but harmless metadata: noise in logs, errors under our tests."""
    return warnings.catch_warnings(action="ignore")


def _sniff(data: bytes) -> str | None:
    """Our format name from the magic bytes, never from the client's file name."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((fmt for magic, fmt in _MAGIC if data.startswith(magic)), None)


def sniff_extension(data: bytes) -> str | None:
    """A file extension from the magic bytes, so stored file names never come from the client."""
    fmt = _sniff(data)
    return INPUT_FORMATS[fmt][0] if fmt else None


def input_media_type(extension: str) -> str:
    """The media type of a stored input, by the extension sniff_extension() gave it."""
    return _MEDIA_TYPES.get(extension, "application/octet-stream")


def _other_format(data: bytes) -> str | None:
    """The name of an image format we do not accept (ICO, PSD, HEIC...), if it is one."""
    if data[4:8] == b"ftyp":
        return "HEIF/AVIF"
    try:
        with _quiet(), Image.open(io.BytesIO(data)) as img:
            return img.format
    except Exception:  # Pillow raises many exception types on bytes it does not know
        return None


def _unrecognised(data: bytes) -> InputError:
    """Say what the upload is, since it is none of our formats."""
    head = data[:2048].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<") and (b"<svg" in head or head.startswith(b"<?xml")):
        return InputError("SVG images are not supported: send a raster image (PNG, JPEG, WebP...)", code=ErrorCode.SVG)
    other = _other_format(data)
    if other:
        return InputError(f"{other} images are not supported: send {_NAMES}", code=ErrorCode.UNSUPPORTED_FORMAT)
    kind = "text" if not data[:1024].translate(None, _TEXT_BYTES) else "binary data of an unknown kind"
    return InputError(f"not an image: the data looks like {kind}", code=ErrorCode.NOT_AN_IMAGE)


def _jpeg_junk(data: bytes) -> bool:
    """Whether the markers before the frame header are junk: long fill runs, too many segments,
    or no frame header at all. Bounded work: at most JPEG_MAX_SEGMENTS steps, fill runs by regex."""
    pos = 2
    for _ in range(JPEG_MAX_SEGMENTS):
        run = _FILL_BOUNDED.match(data, pos)
        if run is None:
            return True  # not a marker where one must be
        if run.end() - pos > JPEG_MAX_FILL:
            return True
        pos = run.end()
        if pos >= len(data):
            return False  # cut short: the truncation check says so
        marker = data[pos]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return False  # a frame header (SOFn): what Pillow looks for
        if marker == 0xD9 or marker == 0xDA:
            return True  # end of image or scan data before any frame header
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:
            pos += 1
            continue
        pos += 1 + int.from_bytes(data[pos + 1 : pos + 3], "big")
    return True


PNG_MAX_CHUNKS = 1024  # chunks before the first IDAT: a real PNG has a handful


def _png_junk(data: bytes) -> bool:
    """Whether a PNG holds more chunks before its image data than any real one (bounded walk)."""
    pos = 8
    for _ in range(PNG_MAX_CHUNKS):
        if pos + 8 > len(data) or data[pos + 4 : pos + 8] in (b"IDAT", b"IEND"):
            return False
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return True


def _jpeg_cut_short(data: bytes) -> bool:
    """Walk the segments to EOI (an EXIF thumbnail's EOI is skipped with its segment)."""
    pos = 2
    while pos + 1 < len(data):
        if data[pos] != 0xFF:
            return False  # corrupt rather than cut: the decoders will say so
        marker = data[pos + 1]
        if marker == 0xD9:
            return False
        if marker == 0xFF:  # a run of fill bytes, skipped in one step
            fill = _FILL.match(data, pos)  # matches here: data[pos] is a fill byte
            pos = (fill.end() if fill else pos + 1) - 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # no length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next marker
            end = _SCAN_END.search(data, pos)
            pos = end.start() if end else len(data)
    return True


def _png_cut_short(data: bytes) -> bool:
    """Walk the chunks to IEND; running out of bytes first means the file was cut."""
    pos = 8
    while pos + 8 <= len(data):
        if data[pos + 4 : pos + 8] == b"IEND":
            return False
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return True


def _cut_short(data: bytes, fmt: str) -> bool:
    """Truncation from the file's own structure: OpenCV 4 pads a cut JPEG with grey, silently."""
    if fmt == "jpeg":
        return _jpeg_cut_short(data)
    if fmt == "png":
        return _png_cut_short(data)
    return fmt == "webp" and len(data) < 8 + int.from_bytes(data[4:8], "little")


def _broken(data: bytes, fmt: str, exc: Exception) -> InputError:
    """'truncated' when the structure or the decoder says the data stops early, else corrupt."""
    if _cut_short(data, fmt) or isinstance(exc, EOFError) or "truncated" in str(exc).lower():
        return InputError(f"the {fmt.upper()} file is truncated: the image data stops early", code=ErrorCode.TRUNCATED)
    reason = str(exc)[:80] or type(exc).__name__
    return InputError(
        f"the {fmt.upper()} data is corrupt and cannot be decoded ({reason})", code=ErrorCode.NOT_AN_IMAGE
    )


def _orientation(img: Image.Image) -> int:
    """EXIF orientation from the header only (PNG's getexif() would decode the pixels)."""
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a broken EXIF block must not hide a decodable image
        return 1


def _inspect(data: bytes, fmt: str) -> tuple[int, int, str]:
    """(width, height, mode) from Pillow's lazy open, which parses headers but no pixels."""
    try:
        with _quiet(), Image.open(io.BytesIO(data), formats=[fmt.upper()]) as img:
            (width, height), mode, turned = img.size, img.mode, _orientation(img) in _TRANSPOSED
    except Exception as exc:  # Pillow raises many exception types on hostile headers
        raise _broken(data, fmt, exc) from None
    return (height, width, mode) if turned else (width, height, mode)


def _header(data: bytes, max_pixels: int) -> tuple[ImageInfo, str]:
    """probe(), plus the Pillow mode that decode() needs to pick a decoder."""
    if not data:
        raise InputError("the file is empty (0 bytes)", code=ErrorCode.EMPTY)
    fmt = _sniff(data)
    if fmt is None:
        raise _unrecognised(data)
    if fmt == "jpeg" and _jpeg_junk(data):
        raise InputError("the JPEG data is corrupt: no frame header where one belongs", code=ErrorCode.NOT_AN_IMAGE)
    if fmt == "png" and _png_junk(data):
        raise InputError("the PNG data is corrupt: too many chunks before the image data", code=ErrorCode.NOT_AN_IMAGE)
    width, height, mode = _inspect(data, fmt)
    if width < 1 or height < 1:
        raise InputError(f"the {fmt.upper()} header says {width}x{height} pixels", code=ErrorCode.NOT_AN_IMAGE)
    if width * height > max_pixels:
        raise InputError(
            f"the image is {width}x{height} ({width * height:,} pixels), over the limit of {max_pixels:,}",
            code=ErrorCode.TOO_MANY_PIXELS,
        )
    return ImageInfo(fmt, width, height), mode


def probe(data: bytes, max_pixels: int) -> ImageInfo:
    """Format and size from the header alone, so that bombs are refused before any pixel is decoded."""
    return _header(data, max_pixels)[0]


def _decode_cv2(data: bytes) -> np.ndarray | None:
    """OpenCV: fast, applies EXIF orientation, converts CMYK; None when it cannot read the data.
    Decoded straight to RGB order where OpenCV can (4.10 on): the same pixels as BGR then a conversion, without
    the second full-size buffer (2 of 13 ms of CPU for a 1600x1200 JPEG, make bench-pipeline)."""
    try:
        if _RGB_FLAG is not None:
            return cv2.imdecode(np.frombuffer(data, np.uint8), _RGB_FLAG)
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _decode_pillow(data: bytes, fmt: str) -> np.ndarray:
    """Pillow, strict: a short file raises instead of being padded. For what OpenCV cannot read."""
    try:
        with _quiet(), Image.open(io.BytesIO(data), formats=[fmt.upper()]) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except Exception as exc:  # Pillow raises many exception types on hostile data
        raise _broken(data, fmt, exc) from None


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """HxWx3 uint8 RGB (input alpha dropped); any problem with the bytes is an InputError."""
    info, mode = _header(data, max_pixels)
    if _cut_short(data, info.format):
        raise InputError(
            f"the {info.format.upper()} file is truncated: it ends before its end marker", code=ErrorCode.TRUNCATED
        )
    # OpenCV reads TIFF through libtiff's RGBA interface, which premultiplies alpha into the colour.
    rgb = None if info.format == "tiff" and mode in _ALPHA_MODES else _decode_cv2(data)
    if rgb is None:
        rgb = _decode_pillow(data, info.format)
    return np.ascontiguousarray(rgb)
