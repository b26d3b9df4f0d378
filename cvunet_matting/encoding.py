"""The output side: options a user may ask for, and writing the cut-out as PNG, WebP or JPEG."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import InputError
from .png import encode_png

_FORMATS = {"png": (".png", "image/png"), "webp": (".webp", "image/webp"), "jpg": (".jpg", "image/jpeg")}
_ALIASES = {"jpeg": "jpg"}
_WHITE = (255, 255, 255)
_NAMED = {
    "white": _WHITE,
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
}
_NO_COLOR = {"", "none", "transparent"}
# Exactly the spellings accepted, and published as the API's enums (openapi.py), so that the
# documented values and the accepted ones cannot drift apart: an empty field means the default.
FLAG_WORDS = dict.fromkeys(("1", "true", "True", "yes", "on"), True) | dict.fromkeys(
    ("", "0", "false", "False", "no", "off"), False
)
FORMAT_WORDS = {
    dot + spelling: _ALIASES.get(name, name)
    for name in ("png", "webp", "jpg", "jpeg")
    for spelling in (name, name.upper())
    for dot in ("", ".")
} | {"": "png"}
_HEX6 = re.compile(r"#?[0-9a-f]{6}")
_HEX3 = re.compile(r"#[0-9a-f]{3}")
_TRIPLE = re.compile(r"(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})", re.ASCII)
_KEYS = {"format", "bg_color", "alpha_only"}
_PARAMS = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".webp": [cv2.IMWRITE_WEBP_QUALITY, 90]}
PNG_LEVEL = 1  # the fastest deflate level: a 12 MP result is 48 MB to compress (see png.py)
_COLOR_HELP = "use #RRGGBB, #RGB, r,g,b or a name (" + ", ".join(_NAMED) + ")"


def _bad(message: str) -> InputError:
    return InputError(message, code="bad_option")


def _show(value: object) -> str:
    """A short repr, so that a hostile value cannot flood an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_format(value: object) -> str:
    """'png', 'webp' or 'jpg' from user text ('JPEG', '.png', ...); None or empty means png."""
    if value is None:
        return "png"
    if not isinstance(value, str) or value not in FORMAT_WORDS:
        raise _bad(f"unknown output format {_show(value)}: use png, webp or jpg")
    return FORMAT_WORDS[value]


def parse_color(value: object) -> tuple[int, int, int] | None:
    """An RGB tuple from '#RRGGBB', '#RGB', 'RRGGBB', 'r,g,b' or a colour name; None for no colour."""
    text = value.strip().lower() if isinstance(value, str) else None
    if value is None or text in _NO_COLOR:
        return None
    if text in _NAMED:
        return _NAMED[text]
    if text and (_HEX6.fullmatch(text) or _HEX3.fullmatch(text)):
        digits = text.lstrip("#")
        digits = digits if len(digits) == 6 else "".join(c * 2 for c in digits)
        return tuple(bytes.fromhex(digits))
    triple = _TRIPLE.fullmatch(text) if text else None
    if triple and all(int(part) <= 255 for part in triple.groups()):
        return tuple(int(part) for part in triple.groups())
    raise _bad(f"bad bg_color {_show(value)}: {_COLOR_HELP}")


def _parse_flag(value: object) -> bool:
    """A boolean from a bool, 0/1, or one of FLAG_WORDS ('true', 'no', 'on'...)."""
    if value is None:
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value in FLAG_WORDS:
        return FLAG_WORDS[value]
    raise _bad(f"bad alpha_only {_show(value)}: use true or false")


@dataclass(frozen=True)
class OutputOptions:
    """How to write a result; normalised on creation so that equal outputs have equal keys."""

    format: str = "png"
    bg_color: tuple[int, int, int] | None = None
    alpha_only: bool = False

    def __post_init__(self):
        if self.format not in _FORMATS:
            raise _bad(f"unknown output format {_show(self.format)}: use png, webp or jpg")
        if not isinstance(self.alpha_only, bool):
            raise _bad(f"bad alpha_only {_show(self.alpha_only)}: use true or false")
        color = self.bg_color
        if color is not None:
            if len(color) != 3 or not all(_is_byte(c) for c in color):
                raise _bad(f"bad bg_color {_show(color)}: use three integers 0-255")
            object.__setattr__(self, "bg_color", tuple(color))
        if self.alpha_only:  # the matte is always a greyscale PNG, whatever else was asked
            object.__setattr__(self, "format", "png")
            object.__setattr__(self, "bg_color", None)
        elif self.format == "jpg" and color is None:  # JPEG has no alpha channel
            object.__setattr__(self, "bg_color", _WHITE)

    @classmethod
    def parse(
        cls, format: str | None = None, bg_color: str | None = None, alpha_only: bool | str = False
    ) -> OutputOptions:
        """Build from user text (form fields, query arguments, CLI flags); bad values raise bad_option."""
        return cls(_parse_format(format), parse_color(bg_color), _parse_flag(alpha_only))

    def key(self) -> str:
        """Canonical text for idempotency keys: equal options always give the same string."""
        return f"{self.format};bg={self._hex() or 'none'};alpha={int(self.alpha_only)}"

    @property
    def extension(self) -> str:
        return _FORMATS[self.format][0]

    @property
    def mimetype(self) -> str:
        return _FORMATS[self.format][1]

    def to_dict(self) -> dict:
        """JSON-safe form, for task arguments and job rows (bg_color as [r, g, b] or None)."""
        color = None if self.bg_color is None else list(self.bg_color)
        return {"format": self.format, "bg_color": color, "alpha_only": self.alpha_only}

    @classmethod
    def from_dict(cls, data: Mapping) -> OutputOptions:
        """The inverse of to_dict; validates again, since the dict may come from outside."""
        if not isinstance(data, Mapping) or set(data) - _KEYS:
            raise _bad(f"bad output options {_show(data)}: expected keys {sorted(_KEYS)}")
        color = data.get("bg_color")
        color = tuple(color) if isinstance(color, list | tuple) else parse_color(color)
        return cls(_parse_format(data.get("format")), color, _parse_flag(data.get("alpha_only", False)))

    def _hex(self) -> str | None:
        return None if self.bg_color is None else bytes(self.bg_color).hex()


def _is_byte(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


def _check_arrays(rgb: np.ndarray, alpha: np.ndarray) -> None:
    """Shapes are a programming contract, not user input: fail loudly with ValueError."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
    if alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
        raise ValueError(f"alpha must be {rgb.shape[:2]} uint8, got {alpha.shape} {alpha.dtype}")


def _flatten(rgb: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    """Composite rgb over a solid colour, rounding; uint16 is enough (255*255 + 127 < 2**16)."""
    a = alpha[..., None].astype(np.uint16)
    mixed = rgb * a + np.array(color, np.uint16) * (255 - a) + 127
    return (mixed // 255).astype(np.uint8)


def _imencode(extension: str, image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(extension, image, _PARAMS.get(extension, []))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as {extension}")
    return buffer.tobytes()


def encode(rgb: np.ndarray, alpha: np.ndarray, options: OutputOptions, threads: int = 1) -> bytes:
    """Write the cut-out as asked: RGBA, the bare matte, or flattened onto a colour.

    PNG goes through our own strip-parallel writer on `threads` threads; JPEG and WebP through OpenCV.
    """
    _check_arrays(rgb, alpha)
    if options.alpha_only:
        return encode_png(alpha, PNG_LEVEL, threads)
    png = options.format == "png"  # our writer takes RGB order, OpenCV's BGR
    if options.bg_color is None:  # PNG or WebP, with the alpha channel
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA if png else cv2.COLOR_RGB2BGRA)
        pixels[..., 3] = alpha
    else:
        flat = _flatten(rgb, alpha, options.bg_color)
        pixels = flat if png else cv2.cvtColor(flat, cv2.COLOR_RGB2BGR)
    return encode_png(pixels, PNG_LEVEL, threads) if png else _imencode(options.extension, pixels)
