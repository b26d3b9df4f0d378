"""The output side: options a user may ask for, and writing the cut-out as PNG, WebP or JPEG."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from cvunet_matting.errors import ErrorCode, InputError

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
_INT = re.compile(r"[0-9]{1,3}", re.ASCII)
# Edge defaults, measured by make bench-quality: each costs under 10% of a 1024 x 1024 CPU inference
# (about 3% each) and beats the raw matte on every metric it touches, so both are on.
REFINE = True
DECONTAMINATE = True
# A subject's interior opaque and the background far from it clear (solid.py): the cat of issue #27
# went from 44% of its matte partly transparent to 8.8%, the astronaut's hair stays soft.
SOLIDIFY = True
MAX_EDGE_PX = 64  # erosion and feathering, in pixels of the full-size image
# The edge options, in key order: each number with its largest value (0 is off), each switch with its default.
EDGE_NUMBERS = {"alpha_threshold": 255, "opaque_threshold": 255, "erode": MAX_EDGE_PX, "feather": MAX_EDGE_PX}
EDGE_SWITCHES = {"refine": REFINE, "decontaminate": DECONTAMINATE, "solidify": SOLIDIFY}
EDGE_KEYS = (*EDGE_NUMBERS, *EDGE_SWITCHES)
_KEYS = {"format", "bg_color", "alpha_only", *EDGE_KEYS}
# Options added since a release: left out of task arguments while at their default, so that workers
# of the version before (which refuse keys they do not know) still take new tasks in a rolling upgrade.
_NEWER_KEYS = ("opaque_threshold", "solidify")
_PARAMS = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".webp": [cv2.IMWRITE_WEBP_QUALITY, 90]}
PNG_LEVEL = 1  # the fastest deflate level: a 12 MP result is 48 MB to compress (see png.py)
_COLOR_HELP = "use #RRGGBB, #RGB, r,g,b or a name (" + ", ".join(_NAMED) + ")"


def _bad(message: str) -> InputError:
    return InputError(message, code=ErrorCode.BAD_OPTION)


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
        red, green, blue = bytes.fromhex(digits)
        return red, green, blue
    triple = _TRIPLE.fullmatch(text) if text else None
    if triple and all(int(part) <= 255 for part in triple.groups()):
        red, green, blue = (int(part) for part in triple.groups())
        return red, green, blue
    raise _bad(f"bad bg_color {_show(value)}: {_COLOR_HELP}")


def _parse_flag(value: object, name: str = "alpha_only", default: bool = False) -> bool:
    """A boolean from a bool, 0/1, or one of FLAG_WORDS ('true', 'no', 'on'...); None or '': the default."""
    if value is None or (value == "" and default):
        return default
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value in FLAG_WORDS:
        return FLAG_WORDS[value]
    raise _bad(f"bad {name} {_show(value)}: use true or false")


def _parse_int(value: object, name: str, top: int) -> int:
    """A whole number 0-top from an int or decimal digits; None or '' means 0 (off)."""
    if value is None or value == "":
        return 0
    number = int(value) if isinstance(value, str) and _INT.fullmatch(value) else value
    if not isinstance(number, int) or not _is_int(number, top):
        raise _bad(f"bad {name} {_show(value)}: use a whole number from 0 to {top}")
    return number


def _parse_edges(values: Mapping) -> dict:
    """The edge options from user values (absent: the defaults), validated."""
    numbers = {name: _parse_int(values.get(name), name, top) for name, top in EDGE_NUMBERS.items()}
    return numbers | {name: _parse_flag(values.get(name), name, default) for name, default in EDGE_SWITCHES.items()}


@dataclass(frozen=True)
class OutputOptions:
    """How to write a result; normalised on creation so that equal outputs have equal keys.

    Edges: alpha below `alpha_threshold` (0-255) becomes 0, alpha at or above `opaque_threshold`
    (1-255; 0 is off) becomes 255 (a subject the model left partly see-through), then the matte is
    eroded by `erode` px and feathered over `feather` px (a Gaussian, sigma feather/2); `refine`
    re-fits the upscaled matte to the full-size photo (guided filter); `decontaminate` takes the old
    background's colour out of the edge pixels (foreground colour estimation); `solidify` makes the
    matte opaque far inside the subject and clear far outside it, before the thresholds (solid.py).
    The input's own alpha always multiplies the result.
    """

    format: str = "png"
    bg_color: tuple[int, int, int] | None = None
    alpha_only: bool = False
    alpha_threshold: int = 0
    erode: int = 0
    feather: int = 0
    refine: bool = REFINE
    decontaminate: bool = DECONTAMINATE
    opaque_threshold: int = 0  # last ones: positional callers of the fields before keep their meaning
    solidify: bool = SOLIDIFY

    def __post_init__(self):
        if self.format not in _FORMATS:
            raise _bad(f"unknown output format {_show(self.format)}: use png, webp or jpg")
        for name in ("alpha_only", *EDGE_SWITCHES):
            if not isinstance(getattr(self, name), bool):
                raise _bad(f"bad {name} {_show(getattr(self, name))}: use true or false")
        for name, top in EDGE_NUMBERS.items():
            if not _is_int(getattr(self, name), top):
                raise _bad(f"bad {name} {_show(getattr(self, name))}: use a whole number from 0 to {top}")
        color = self.bg_color
        if color is not None:
            if len(color) != 3 or not all(_is_byte(c) for c in color):
                raise _bad(f"bad bg_color {_show(color)}: use three integers 0-255")
            object.__setattr__(self, "bg_color", tuple(color))
        if self.alpha_only:  # the matte is always a greyscale PNG, whatever else was asked
            object.__setattr__(self, "format", "png")
            object.__setattr__(self, "bg_color", None)
            object.__setattr__(self, "decontaminate", DECONTAMINATE)  # no colours are written
        elif self.format == "jpg" and color is None:  # JPEG has no alpha channel
            object.__setattr__(self, "bg_color", _WHITE)

    @classmethod
    def parse(
        cls,
        format: str | None = None,
        bg_color: str | None = None,
        alpha_only: bool | str = False,
        alpha_threshold: int | str | None = None,
        erode: int | str | None = None,
        feather: int | str | None = None,
        refine: bool | str | None = None,
        decontaminate: bool | str | None = None,
        opaque_threshold: int | str | None = None,
        solidify: bool | str | None = None,
    ) -> OutputOptions:
        """Build from user text (form fields, query arguments, CLI flags); bad values raise bad_option.

        None or an empty string leaves an edge option at its default.
        """
        edges = {
            "alpha_threshold": alpha_threshold,
            "opaque_threshold": opaque_threshold,
            "erode": erode,
            "feather": feather,
            "refine": refine,
            "decontaminate": decontaminate,
            "solidify": solidify,
        }
        return cls(_parse_format(format), parse_color(bg_color), _parse_flag(alpha_only), **_parse_edges(edges))

    def key(self) -> str:
        """Canonical text for idempotency keys: equal options always give the same string.

        Edge options appear only where they differ from the defaults, so the keys of results made
        with default options before edge options existed still read the same.
        """
        base = f"{self.format};bg={self._hex() or 'none'};alpha={int(self.alpha_only)}"
        return base + "".join(f";{name}={int(getattr(self, name))}" for name in self._changed_edges())

    def _changed_edges(self) -> list[str]:
        return [name for name in EDGE_KEYS if getattr(self, name) != _DEFAULTS[name]]

    @property
    def extension(self) -> str:
        return _FORMATS[self.format][0]

    @property
    def mimetype(self) -> str:
        return _FORMATS[self.format][1]

    def to_dict(self) -> dict:
        """JSON-safe form, for task arguments and job rows (bg_color as [r, g, b] or None)."""
        color = None if self.bg_color is None else list(self.bg_color)
        edges = {name: getattr(self, name) for name in EDGE_KEYS}
        for name in _NEWER_KEYS:
            if edges[name] == _DEFAULTS[name]:
                del edges[name]
        return {"format": self.format, "bg_color": color, "alpha_only": self.alpha_only, **edges}

    @classmethod
    def from_dict(cls, data: Mapping) -> OutputOptions:
        """The inverse of to_dict; validates again, since the dict may come from outside."""
        if not isinstance(data, Mapping) or set(data) - _KEYS:
            raise _bad(f"bad output options {_show(data)}: expected keys {sorted(_KEYS)}")
        color = data.get("bg_color")
        color = tuple(color) if isinstance(color, list | tuple) else parse_color(color)
        fmt, alpha_only = _parse_format(data.get("format")), _parse_flag(data.get("alpha_only", False))
        return cls(fmt, color, alpha_only, **_parse_edges(data))

    def _hex(self) -> str | None:
        return None if self.bg_color is None else bytes(self.bg_color).hex()


def _is_int(value: object, top: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top


def _is_byte(value: object) -> bool:
    return _is_int(value, 255)


_DEFAULTS = {name: getattr(OutputOptions, name) for name in EDGE_KEYS}


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
