"""The output canvas's options as users spell them: crop margin, size, subject scale and position, blur.

The spellings follow remove.bg's API (crop_margin "30px" or "10%", one, two or four values; scale
"original" or "10%"-"100%"; position "original", "center", "x%" or "x% y%"; size "preview" or "full"
and their aliases), plus ours: a size given as a longest side in px. Each parser returns a canonical
string, the same for every spelling of one choice, so equal outputs have equal idempotency keys; the
layout (layout.py) reads the canonical strings back with the `*_of` functions.
"""

from __future__ import annotations

import re

from cvunet_matting.errors import ErrorCode, InputError

MAX_MARGIN_PX, MAX_MARGIN_PERCENT = 500, 50  # remove.bg's bounds: per side, px or % of the subject
MIN_SCALE, MAX_SCALE = 10, 100  # the subject's share of the canvas, in %
MIN_SIDE, MAX_SIDE = 16, 16384  # a size given as the longest side, in px
MAX_BLUR_PX = 200  # bg_blur: the Gaussian's sigma at the photo's full size
# Named sizes: the most pixels the output may have (None: as drawn). remove.bg's: preview is 0.25 MP
# ("small" and "regular" are its old names), medium 1.5 MP, hd 4 MP; full, auto, 4k and 50MP keep
# the whole resolution (ours is bounded by CVUNET_MAX_PIXELS already).
SIZES = {"preview": 250_000, "medium": 1_500_000, "hd": 4_000_000, "full": None}
_SIZE_ALIASES = {"small": "preview", "regular": "preview", "auto": "full", "4k": "full", "50mp": "full", "": "full"}
SIZE_WORDS = (*SIZES, *(a for a in _SIZE_ALIASES if a))
ORIGINAL = "original"
_LENGTH = re.compile(r"(\d{1,4})(px|%)?", re.ASCII)
_PERCENT = re.compile(r"(\d{1,3})%", re.ASCII)
_SIDE = re.compile(r"(\d{1,5})(px)?", re.ASCII)
_SEPARATORS = re.compile(r"[\s,]+")


def _bad(name: str, value: object, help_text: str) -> InputError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return InputError(f"bad {name} {shown}: {help_text}", code=ErrorCode.BAD_OPTION)


def _words(value: object, name: str, help_text: str) -> list[str] | None:
    """The value's space- or comma-separated words, lower case; None for absent or empty."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise _bad(name, value, help_text)
    words = [w for w in _SEPARATORS.split(value.strip().lower()) if w]
    return words or None


_MARGIN_HELP = (
    f"use 1, 2 or 4 values (all sides; top-bottom left-right; top right bottom left), each 0-{MAX_MARGIN_PX}px"
    f" or 0-{MAX_MARGIN_PERCENT}% of the subject's size, e.g. '30px' or '10% 5%'"
)


def parse_margin(value: object) -> str:
    """crop_margin as 'T R B L' (each 'Npx' or 'N%'), shortened as CSS does; '0' for none."""
    words = _words(value, "crop_margin", _MARGIN_HELP)
    if words is None or words == ["0"]:
        return "0"
    if len(words) not in (1, 2, 4):
        raise _bad("crop_margin", value, _MARGIN_HELP)
    sides = []
    for word in words:
        match = _LENGTH.fullmatch(word)
        number, unit = (int(match[1]), match[2] or "px") if match else (-1, "px")
        top = MAX_MARGIN_PERCENT if unit == "%" else MAX_MARGIN_PX
        if not 0 <= number <= top:
            raise _bad("crop_margin", value, _MARGIN_HELP)
        sides.append("0" if number == 0 else f"{number}{unit}")
    top_, right, bottom, left = (sides * 4)[:4] if len(sides) == 1 else (sides * 2 if len(sides) == 2 else sides)
    return _shortest(top_, right, bottom, left)


def _shortest(top: str, right: str, bottom: str, left: str) -> str:
    if top == right == bottom == left:
        return top
    if top == bottom and right == left:
        return f"{top} {right}"
    return f"{top} {right} {bottom} {left}"


def margin_of(canonical: str, subject: tuple[int, int]) -> tuple[int, int, int, int]:
    """The margin in px (top, right, bottom, left) around a subject `subject` = (width, height) px."""
    words = canonical.split()
    sides = (words * 4)[:4] if len(words) == 1 else (words * 2 if len(words) == 2 else words)
    width, height = subject
    out = []
    for side, word in enumerate(sides):
        number = int(word.rstrip("px%"))
        if word.endswith("%"):
            number = round(number * (height if side % 2 == 0 else width) / 100)
        out.append(number)
    return out[0], out[1], out[2], out[3]


_SIZE_HELP = f"use {', '.join(SIZE_WORDS)}, or a longest side in px ({MIN_SIDE}-{MAX_SIDE}, e.g. '1024px')"


def parse_size(value: object) -> str:
    """size as 'full', 'preview', 'medium', 'hd', or a longest side in px as digits ('1024')."""
    words = _words(value, "size", _SIZE_HELP)
    if words is None:
        return "full"
    word = words[0] if len(words) == 1 else "?"
    if word in SIZES or word in _SIZE_ALIASES:
        return _SIZE_ALIASES.get(word, word)
    match = _SIDE.fullmatch(word)
    if not match or not MIN_SIDE <= int(match[1]) <= MAX_SIDE:
        raise _bad("size", value, _SIZE_HELP)
    return str(int(match[1]))


def size_of(canonical: str, width: int, height: int) -> tuple[int, int]:
    """The output's size for a drawn canvas of width x height: shrunk to fit, never enlarged."""
    if canonical in SIZES:
        most = SIZES[canonical]
        factor = 1.0 if most is None else min(1.0, (most / (width * height)) ** 0.5)
    else:
        factor = min(1.0, int(canonical) / max(width, height))
    if factor >= 1.0:
        return width, height
    return max(1, int(width * factor)), max(1, int(height * factor))  # down: never past the bound


_SCALE_HELP = f"use 'original' or {MIN_SCALE}%-{MAX_SCALE}% (the subject's size in the canvas)"


def parse_scale(value: object) -> str:
    """scale as 'original' or 'N%'."""
    words = _words(value, "scale", _SCALE_HELP)
    if words is None or words == [ORIGINAL]:
        return ORIGINAL
    match = _PERCENT.fullmatch(words[0]) if len(words) == 1 else None
    if not match or not MIN_SCALE <= int(match[1]) <= MAX_SCALE:
        raise _bad("scale", value, _SCALE_HELP)
    return f"{int(match[1])}%"


_POSITION_HELP = "use 'original', 'center', 'X%' or 'X% Y%' (0-100: 0% left or top, 100% right or bottom)"


def parse_position(value: object) -> str | None:
    """position as 'original' or 'X% Y%'; None when absent (then 'center' with a scale, else 'original')."""
    words = _words(value, "position", _POSITION_HELP)
    if words is None:
        return None
    if words == [ORIGINAL]:
        return ORIGINAL
    if words == ["center"] or words == ["centre"]:
        return "50% 50%"
    matches = [_PERCENT.fullmatch(w) for w in words] if len(words) in (1, 2) else [None]
    if not all(m and int(m[1]) <= 100 for m in matches):
        raise _bad("position", value, _POSITION_HELP)
    numbers = [int(m[1]) for m in matches if m]
    horizontal, vertical = numbers[0], numbers[-1]
    return f"{horizontal}% {vertical}%"


def position_of(canonical: str) -> tuple[float, float] | None:
    """(x, y) as fractions 0-1, or None for 'original'."""
    if canonical == ORIGINAL:
        return None
    x, y = canonical.split()
    return int(x[:-1]) / 100, int(y[:-1]) / 100


def scale_of(canonical: str) -> float | None:
    return None if canonical == ORIGINAL else int(canonical[:-1]) / 100


_BLUR_HELP = f"use a whole number of px from 0 (off) to {MAX_BLUR_PX}"


def parse_blur(value: object) -> int:
    """bg_blur in px (0: off) from an int or digits; None or '' is 0."""
    if value is None or value == "":
        return 0
    number = int(value) if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 3 else value
    if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number <= MAX_BLUR_PX:
        raise _bad("bg_blur", value, _BLUR_HELP)
    return number
