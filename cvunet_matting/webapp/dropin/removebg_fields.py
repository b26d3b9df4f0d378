"""remove.bg's request fields, read as its API reference states them, turned into our option fields.

What remove.bg's `POST /v1.0/removebg` takes (its published OpenAPI document, `RemoveBgMultipart` and
`RemoveBgJson`): one image source (`image_file`, `image_file_b64` or `image_url`), `size`, `type`,
`format` (auto/png/jpg/zip), `channels` (rgba/alpha), one background (`bg_color`, `bg_image_file`),
`crop`, `crop_margin`, `scale`, `position`, `roi`. Each is mapped onto our own option fields
(webapp/inputs.py's OPTION_FIELDS), which then parse and check them as they do for /api/v1. A field
our options do not have yet, with a value that would change the result, is refused (400), never
dropped; its no-op value (crop=false, size=full...) is accepted.

Refusals are RemoveBgError: remove.bg's status, code and title (its error codes where it has one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cvunet_matting.webapp.inputs import OPTION_FIELDS

IMAGE_SOURCES = ("image_file", "image_file_b64", "image_url")
BG_SOURCES = ("bg_color", "bg_image_file", "bg_image_url")
# Fields the reference lists that we take; anything else is refused (a misspelt option ran unseen).
KNOWN = (
    *IMAGE_SOURCES,
    *BG_SOURCES,
    "size",
    "type",
    "format",
    "channels",
    "crop",
    "crop_margin",
    "scale",
    "position",
    "roi",
)
TYPES = ("auto", "person", "product", "car", "animal", "graphic", "transportation")
ANSWER_FORMATS = ("auto", "png", "jpg", "zip")
# remove.bg's sizes and the spellings of each; "preview" is its default (0.25 MP).
FULL_SIZES = ("full", "auto", "4k", "50mp")
SIZES = (*FULL_SIZES, "preview", "small", "regular", "medium", "hd")
NO_OP = {"crop": ("", "false", "0"), "crop_margin": ("", "0", "0px", "0%"), "scale": ("", "original")}
NO_OP |= {"position": ("", "original")}
_HEX = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})")
_ROI_PART = re.compile(r"(\d{1,6}(?:\.\d+)?)(px|%)")


class RemoveBgError(Exception):
    """A refusal as remove.bg words it: {"errors": [{"title", "code", "detail"}]} with its status."""

    def __init__(self, status: int, code: str, title: str, detail: str = "", retry_after: int | None = None):
        super().__init__(title)
        self.status, self.code, self.title, self.detail, self.retry_after = status, code, title, detail, retry_after

    def body(self) -> dict:
        error = {"title": self.title, "code": self.code}
        return {"errors": [{**error, "detail": self.detail} if self.detail else error]}


def bad(code: str, title: str, detail: str = "") -> RemoveBgError:
    return RemoveBgError(400, code, title, detail)


@dataclass
class Translated:
    """Our option fields for the task, and how the answer is made from its result."""

    fields: dict[str, str] = field(default_factory=dict)
    answer: str = "png"  # png, jpg or zip: what the client gets
    foreground_type: str = "other"  # X-Type: the type asked for; we do not classify
    zip_bg_color: str | None = None  # format=zip: its colour image is flattened on this (zipped.py)


def core_has(name: str) -> bool:
    """Whether our own options take this field (output controls arrive field by field)."""
    return name in OPTION_FIELDS


def check_names(names: set[str]) -> None:
    unknown = sorted(names - set(KNOWN))
    if unknown:
        raise bad(
            "unknown_parameter",
            f"Unknown parameter(s): {', '.join(unknown)}",
            f"this server takes {', '.join(KNOWN)}",
        )


def image_source(values: dict[str, str], files: set[str]) -> str:
    """Which one of the image sources was sent."""
    given = [name for name in IMAGE_SOURCES if name in files or values.get(name)]
    if not given:
        raise bad(
            "missing_source",
            "No image given",
            "Please provide the source image in the image_url, image_file or image_file_b64 parameter.",
        )
    if len(given) > 1:
        raise bad(
            "multiple_sources",
            "Multiple image sources given: Please provide either the image_url,"
            " image_file or image_file_b64 parameter.",
        )
    return given[0]


def bg_color(text: str) -> str:
    """remove.bg's colour (81d4fa, fff, 81d4faff, a name) as our bg_color; a see-through one is refused."""
    match = _HEX.fullmatch(text.strip())
    if not match:
        return text  # a name, or r,g,b: our parser judges it
    digits = match.group(1)
    if len(digits) in (4, 8):
        opaque = digits[-1] * 2 if len(digits) == 4 else digits[-2:]
        if opaque.lower() != "ff":
            raise bad(
                "invalid_bg_color",
                "Invalid bg_color parameter given",
                "semi-transparent background colours are not supported here: use an opaque one",
            )
        digits = digits[:-1] if len(digits) == 4 else digits[:-2]
    return "#" + digits


def whole_image_roi(text: str, width: int, height: int) -> bool:
    """Whether `roi` ("x1 y1 x2 y2", each px or %) covers the whole image; a malformed one is refused."""
    found = [_ROI_PART.fullmatch(part) for part in text.split()]
    parts = [match for match in found if match]
    if len(found) != 4 or len(parts) != 4:
        raise bad("invalid_roi", "Invalid roi parameter given", 'use "x1 y1 x2 y2", each in px or %')
    spans = (width, height, width, height)
    pixels = [
        float(m.group(1)) * (span / 100 if m.group(2) == "%" else 1) for m, span in zip(parts, spans, strict=True)
    ]
    x1, y1, x2, y2 = pixels
    if x1 >= x2 or y1 >= y2:
        raise bad("roi_region_empty", "ROI region is empty", "The given roi parameter defines an empty region")
    if x2 > width + 0.5 or y2 > height + 0.5:
        raise bad(
            "roi_exceeds_bounds",
            "ROI exceeds image bounds",
            "The given roi parameter defines a region that exceeds the image bounds",
        )
    return x1 <= 0.5 and y1 <= 0.5 and x2 >= width - 1 and y2 >= height - 1


def passed_through(values: dict[str, str], fields: dict[str, str]) -> None:
    """crop, crop_margin, scale, position: remove.bg's spellings are our options' own."""
    for name, no_op in NO_OP.items():
        value = values.get(name, "").strip()
        if core_has(name):
            if value:
                fields[name] = value
        elif value.lower() not in no_op:
            raise bad(
                f"unsupported_{name}",
                f"Parameter '{name}' is not supported by this server yet",
                f"send {name} only with its default value",
            )


def size_field(values: dict[str, str], fields: dict[str, str]) -> None:
    """remove.bg's default is preview (0.25 MP): a client that sends no size gets that here too, once our
    options have `size`; until then only the full-size values are taken (and no size means full size)."""
    value = values.get("size", "").strip().lower()
    if value and value not in SIZES:
        raise bad("invalid_size", "Invalid value for parameter 'size'", f"use one of {', '.join(SIZES)}")
    if core_has("size"):
        fields["size"] = value or "preview"
    elif value and value not in FULL_SIZES:
        raise bad(
            "unsupported_size",
            f"size={value} is not supported by this server yet",
            f"send size={' or size='.join(FULL_SIZES)}: the result keeps the image's own size",
        )


def answer_format(values: dict[str, str], fields: dict[str, str], opaque: bool) -> str:
    """png, jpg or zip from remove.bg's `format`; the task's own format follows from it."""
    value = values.get("format", "").strip().lower() or "auto"
    if value not in ANSWER_FORMATS:
        raise bad("invalid_format", "Invalid format parameter given", f"use one of {', '.join(ANSWER_FORMATS)}")
    if fields.get("alpha_only") == "true":
        return "png"  # the matte is a grey PNG, whatever the format
    if value == "auto":  # remove.bg: PNG where transparency remains, else JPG
        value = "jpg" if opaque else "png"
    fields["format"] = "jpg" if value == "jpg" else "png"  # a ZIP is cut from the RGBA PNG
    return value


def translate(values: dict[str, str], files: set[str], width: int, height: int) -> Translated:
    """Our option fields from remove.bg's (`values` the text fields, `files` the names of file parts);
    width and height: the image's, for `roi`."""
    out = Translated()
    channels = values.get("channels", "").strip().lower() or "rgba"
    if channels not in ("rgba", "alpha"):
        raise bad("invalid_channels", "Invalid value for parameter 'channels'", "use rgba or alpha")
    if channels == "alpha":
        out.fields["alpha_only"] = "true"
    kind = values.get("type", "").strip().lower() or "auto"
    if kind not in TYPES:
        raise bad("invalid_type", "Invalid value for parameter 'type'", f"use one of {', '.join(TYPES)}")
    out.foreground_type = "other" if kind == "auto" else kind
    backgrounds = [name for name in BG_SOURCES if name in files or values.get(name)]
    if len(backgrounds) > 1:
        raise bad(
            "multiple_bg_sources",
            "Multiple background sources given: Please provide either the"
            " bg_color, the bg_image_url or the bg_image_file parameter.",
        )
    if "bg_image_url" in backgrounds:
        raise bad(
            "unsupported_bg_image_url",
            "bg_image_url is not supported here",
            "send the background image as bg_image_file",
        )
    if "bg_color" in backgrounds:
        out.fields["bg_color"] = bg_color(values["bg_color"])
    if "bg_image_file" in backgrounds and not core_has("bg_image"):
        raise bad("unsupported_bg_image_file", "bg_image_file is not supported by this server yet")
    passed_through(values, out.fields)
    size_field(values, out.fields)
    roi = values.get("roi", "").strip()
    if roi and not whole_image_roi(roi, width, height):
        raise bad(
            "unsupported_roi",
            "A region of interest smaller than the image is not supported here",
            'send roi="0% 0% 100% 100%" or leave it out',
        )
    opaque = bool(backgrounds)
    out.answer = answer_format(values, out.fields, opaque)
    if out.answer == "zip" and "bg_image_file" in backgrounds:
        raise bad(
            "invalid_format",
            "format=zip with a background image is not supported here",
            "use format=png or jpg with bg_image_file",
        )
    if out.answer == "zip":  # the task keeps the alpha; the ZIP's colour image is flattened instead
        out.zip_bg_color = out.fields.pop("bg_color", None)
    return out
