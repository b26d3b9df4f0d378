"""Output options and encoding of cut-outs: RGBA PNG, alpha only, or flattened JPEG/WebP/PNG."""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import InputError

FORMATS = {"png": (".png", "image/png"), "webp": (".webp", "image/webp"), "jpg": (".jpg", "image/jpeg")}
NAMED_COLORS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "red": (255, 0, 0),
    "green": (0, 128, 0),
    "blue": (0, 0, 255),
    "grey": (128, 128, 128),
    "gray": (128, 128, 128),
}


def parse_color(text: str) -> tuple[int, int, int]:
    """'#RRGGBB', '#RGB', 'RRGGBB', 'r,g,b' or a colour name -> (r, g, b)."""
    value = text.strip().lower()
    if value in NAMED_COLORS:
        return NAMED_COLORS[value]
    hexa = value.removeprefix("#")
    if re.fullmatch(r"[0-9a-f]{3}", hexa):
        hexa = "".join(c * 2 for c in hexa)
    if re.fullmatch(r"[0-9a-f]{6}", hexa):
        return tuple(int(hexa[i : i + 2], 16) for i in (0, 2, 4))
    parts = [p.strip() for p in value.split(",")]
    if len(parts) == 3 and all(p.isdigit() and int(p) <= 255 for p in parts):
        return tuple(int(p) for p in parts)
    raise InputError(f"background colour {text!r} is not '#RRGGBB', 'r,g,b' or a colour name", code="bad_option")


def _truthy(value: bool | str | None) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"", "0", "false", "no", "off"}:
        return False
    raise InputError(f"alpha_only must be true or false, not {value!r}", code="bad_option")


@dataclass(frozen=True)
class OutputOptions:
    format: str = "png"
    bg_color: tuple[int, int, int] | None = None
    alpha_only: bool = False

    @classmethod
    def parse(cls, format: str | None = None, bg_color: str | None = None, alpha_only: bool | str = False):
        fmt = (format or "png").strip().lower()
        fmt = "jpg" if fmt == "jpeg" else fmt
        if fmt not in FORMATS:
            raise InputError(f"output format {format!r} is not one of png, webp, jpg", code="bad_option")
        color = parse_color(bg_color) if bg_color and str(bg_color).strip() else None
        if _truthy(alpha_only):
            return cls("png", None, True)
        if fmt == "jpg" and color is None:
            color = (255, 255, 255)  # JPEG has no alpha: flatten on white unless told otherwise
        return cls(fmt, color, False)

    def key(self) -> str:
        bg = "none" if self.bg_color is None else "{:02x}{:02x}{:02x}".format(*self.bg_color)
        return f"{self.format};bg={bg};alpha={int(self.alpha_only)}"

    @property
    def extension(self) -> str:
        return FORMATS[self.format][0]

    @property
    def mimetype(self) -> str:
        return FORMATS[self.format][1]

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "bg_color": list(self.bg_color) if self.bg_color else None,
            "alpha_only": self.alpha_only,
        }

    @classmethod
    def from_dict(cls, d: dict) -> OutputOptions:
        color = d.get("bg_color")
        return cls(d.get("format", "png"), tuple(color) if color else None, bool(d.get("alpha_only")))


def flatten(rgb: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0
    out = rgb.astype(np.float32) * a + np.float32(color) * (1.0 - a)
    return (out + 0.5).astype(np.uint8)


def encode(rgb: np.ndarray, alpha: np.ndarray, options: OutputOptions) -> bytes:
    """Original pixels plus the matte, in the requested form."""
    if options.alpha_only:
        image = alpha
    elif options.bg_color is not None:
        image = cv2.cvtColor(flatten(rgb, alpha, options.bg_color), cv2.COLOR_RGB2BGR)
    else:
        image = cv2.merge([rgb[..., 2], rgb[..., 1], rgb[..., 0], alpha])
    params = {
        # zlib level 1 with the "up" filter: ~3x faster than the defaults on 12 MP for ~15% more bytes.
        "png": [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP],
        "jpg": [cv2.IMWRITE_JPEG_QUALITY, 95],
        "webp": [cv2.IMWRITE_WEBP_QUALITY, 95],
    }[options.format]
    ok, buffer = cv2.imencode(options.extension, image, params)
    if not ok:
        raise InputError(f"could not encode the result as {options.format}", code="encode_failed")
    return buffer.tobytes()
