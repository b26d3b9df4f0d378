"""The output side: options a user may ask for, and writing the cut-out as PNG, WebP or JPEG."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.storage.files import sha256_bytes

from . import canvas_options as canvas
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
# The canvas and background options (canvas_options.py), in key order, each with its default.
CANVAS_DEFAULTS = {
    "crop": False,
    "crop_margin": "0",
    "size": "full",
    "scale": canvas.ORIGINAL,
    "position": canvas.ORIGINAL,
    "bg_image": None,
    "bg_blur": 0,
}
CANVAS_KEYS = tuple(CANVAS_DEFAULTS)
_KEYS = {"format", "bg_color", "alpha_only", *EDGE_KEYS, *CANVAS_KEYS}
# Options added since a release: left out of task arguments while at their default, so that workers
# of the version before (which refuse keys they do not know) still take new tasks in a rolling upgrade.
_NEWER_KEYS = ("opaque_threshold", "solidify", *CANVAS_KEYS)
_HEX_KEY = re.compile(r"[0-9a-f]{64}", re.ASCII)
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

    Canvas (layout.py, remove.bg's spellings, canvas_options.py): `crop` to the subject's box with
    `crop_margin`, the subject's `scale` and `position` on the canvas, then `size` at most. Background:
    a colour (`bg_color`), an uploaded image (`bg_image`, its storage key) or the photo blurred
    (`bg_blur` px), one at most; the result is flattened onto it.
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
    # The canvas (canonical strings of canvas_options.py; layout.py draws them) and the background.
    crop: bool = False
    crop_margin: str = "0"
    size: str = "full"
    scale: str = canvas.ORIGINAL
    position: str | None = None  # None: 'center' (50% 50%) with a scale, else 'original'
    bg_image: str | None = None  # the background upload's storage key (its sha256), part of the key
    bg_blur: int = 0
    # The background's bytes while an upload is on its way to storage (never in the key or to_dict).
    background: bytes | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.format not in _FORMATS:
            raise _bad(f"unknown output format {_show(self.format)}: use png, webp or jpg")
        for name in ("alpha_only", "crop", *EDGE_SWITCHES):
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
        self._normalise_canvas()
        self._normalise_background()
        if self.alpha_only:  # the matte is always a greyscale PNG, whatever else was asked
            object.__setattr__(self, "format", "png")
            object.__setattr__(self, "bg_color", None)
            object.__setattr__(self, "decontaminate", DECONTAMINATE)  # no colours are written
            object.__setattr__(self, "bg_image", None)
            object.__setattr__(self, "bg_blur", 0)
            object.__setattr__(self, "background", None)
        elif self.format == "jpg" and color is None and not self.has_backdrop:  # JPEG has no alpha channel
            object.__setattr__(self, "bg_color", _WHITE)

    def _normalise_canvas(self) -> None:
        """Each canvas option in its canonical spelling; the margin only counts with a crop."""
        margin = canvas.parse_margin(self.crop_margin) if self.crop else "0"
        object.__setattr__(self, "crop_margin", margin)
        object.__setattr__(self, "size", canvas.parse_size(self.size))
        object.__setattr__(self, "scale", canvas.parse_scale(self.scale))
        position = canvas.parse_position(self.position)
        if position is None:  # remove.bg's rule: a scaled subject is centred unless placed otherwise
            position = "50% 50%" if self.scale != canvas.ORIGINAL else canvas.ORIGINAL
        object.__setattr__(self, "position", position)

    def _normalise_background(self) -> None:
        object.__setattr__(self, "bg_blur", canvas.parse_blur(self.bg_blur))
        if self.background is not None:
            key = sha256_bytes(self.background)
            if self.bg_image not in (None, key):
                raise ValueError("bg_image is not the key of the background bytes given")
            object.__setattr__(self, "bg_image", key)
        if self.bg_image is not None and not (isinstance(self.bg_image, str) and _HEX_KEY.fullmatch(self.bg_image)):
            raise _bad(f"bad bg_image {_show(self.bg_image)}: send the background as an upload named 'bg_image'")
        if sum((self.bg_color is not None, self.bg_image is not None, self.bg_blur > 0)) > 1:
            raise _bad("bg_color, bg_image and bg_blur are exclusive: ask for one background")

    @property
    def has_backdrop(self) -> bool:
        """A background drawn per pixel (an image, the blurred photo), not a solid colour."""
        return self.bg_image is not None or self.bg_blur > 0

    @property
    def moves_pixels(self) -> bool:
        """Whether the canvas differs from the photo's frame (crop, size, scale or position asked for)."""
        return any(getattr(self, name) != CANVAS_DEFAULTS[name] for name in ("crop", "size", "scale", "position"))

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
        *,
        crop: bool | str | None = None,
        crop_margin: str | None = None,
        size: str | None = None,
        scale: str | None = None,
        position: str | None = None,
        bg_blur: int | str | None = None,
        background: bytes | None = None,
    ) -> OutputOptions:
        """Build from user text (form fields, query arguments, CLI flags); bad values raise bad_option.

        None or an empty string leaves an option at its default. `background`: the bytes of an uploaded
        background image (bg_image), already checked as any upload is.
        """
        if background is not None and not background:
            raise _bad("the bg_image upload is empty")
        edges = {
            "alpha_threshold": alpha_threshold,
            "opaque_threshold": opaque_threshold,
            "erode": erode,
            "feather": feather,
            "refine": refine,
            "decontaminate": decontaminate,
            "solidify": solidify,
        }
        fmt, color, only = _parse_format(format), parse_color(bg_color), _parse_flag(alpha_only)
        return cls(
            fmt,
            color,
            only,
            **_parse_edges(edges),
            crop=_parse_flag(crop, "crop"),
            crop_margin=crop_margin or "0",
            size=size or "full",
            scale=scale or canvas.ORIGINAL,
            position=position,
            bg_blur=canvas.parse_blur(bg_blur),
            background=background,
        )

    def key(self) -> str:
        """Canonical text for idempotency keys: equal options always give the same string.

        Edge options appear only where they differ from the defaults, so the keys of results made
        with default options before edge options existed still read the same.
        """
        base = f"{self.format};bg={self._hex() or 'none'};alpha={int(self.alpha_only)}"
        base += "".join(f";{name}={int(getattr(self, name))}" for name in self._changed_edges())
        return base + "".join(f";{name}={_text(getattr(self, name))}" for name in self._changed_canvas())

    def _changed_edges(self) -> list[str]:
        return [name for name in EDGE_KEYS if getattr(self, name) != _DEFAULTS[name]]

    def _changed_canvas(self) -> list[str]:
        """The canvas options that differ from their defaults; a position stays with a scale (without
        it, 'original' would read back as the scale's default, 'center')."""
        scaled = self.scale != CANVAS_DEFAULTS["scale"]
        return [
            name
            for name in CANVAS_KEYS
            if getattr(self, name) != CANVAS_DEFAULTS[name] or (name == "position" and scaled)
        ]

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
            if name in edges and edges[name] == _DEFAULTS[name]:
                del edges[name]
        drawn = {name: getattr(self, name) for name in self._changed_canvas()}
        return {"format": self.format, "bg_color": color, "alpha_only": self.alpha_only, **edges, **drawn}

    @classmethod
    def from_dict(cls, data: Mapping) -> OutputOptions:
        """The inverse of to_dict; validates again, since the dict may come from outside."""
        if not isinstance(data, Mapping) or set(data) - _KEYS:
            raise _bad(f"bad output options {_show(data)}: expected keys {sorted(_KEYS)}")
        color = data.get("bg_color")
        color = tuple(color) if isinstance(color, list | tuple) else parse_color(color)
        fmt, alpha_only = _parse_format(data.get("format")), _parse_flag(data.get("alpha_only", False))
        drawn = {name: data[name] for name in CANVAS_KEYS if data.get(name) is not None}
        if "crop" in drawn:
            drawn["crop"] = _parse_flag(drawn["crop"], "crop")
        return cls(fmt, color, alpha_only, **_parse_edges(data), **drawn)

    def _hex(self) -> str | None:
        return None if self.bg_color is None else bytes(self.bg_color).hex()


def _text(value: object) -> str:
    return str(int(value)) if isinstance(value, bool) else str(value)


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


def _flatten(rgb: np.ndarray, alpha: np.ndarray, under: tuple[int, int, int] | np.ndarray) -> np.ndarray:
    """Composite rgb over a solid colour or a picture, rounding; uint16 is enough (255*255 + 127 < 2**16)."""
    a = alpha[..., None].astype(np.uint16)
    mixed = rgb * a + np.asarray(under, np.uint16) * (255 - a) + 127
    return (mixed // 255).astype(np.uint8)


def _imencode(extension: str, image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(extension, image, _PARAMS.get(extension, []))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} image as {extension}")
    return buffer.tobytes()


def encode(
    rgb: np.ndarray, alpha: np.ndarray, options: OutputOptions, threads: int = 1, backdrop: np.ndarray | None = None
) -> bytes:
    """Write the cut-out as asked: RGBA, the bare matte, or flattened onto a colour or onto `backdrop`
    (an RGB picture of the same size: a background image, the blurred photo; drawing.py).

    PNG goes through our own strip-parallel writer on `threads` threads; JPEG and WebP through OpenCV.
    """
    _check_arrays(rgb, alpha)
    if options.alpha_only:
        return encode_png(alpha, PNG_LEVEL, threads)
    png = options.format == "png"  # our writer takes RGB order, OpenCV's BGR
    if backdrop is not None:
        _check_arrays(backdrop, alpha)
    if options.bg_color is None and backdrop is None and png:  # RGBA, laid out by the writer as it deflates
        return encode_png(rgb, PNG_LEVEL, threads, alpha)
    if options.bg_color is None and backdrop is None:  # WebP, with the alpha channel
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
        pixels[..., 3] = alpha
    else:
        under = backdrop if backdrop is not None else options.bg_color
        assert under is not None  # noqa: S101 (the branch's own condition)
        flat = _flatten(rgb, alpha, under)
        pixels = flat if png else cv2.cvtColor(flat, cv2.COLOR_RGB2BGR)
    return encode_png(pixels, PNG_LEVEL, threads) if png else _imencode(options.extension, pixels)
