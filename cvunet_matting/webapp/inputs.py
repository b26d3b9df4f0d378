"""What the API and the pages read from a request: output options, form fields, uploads.

Everything here refuses bad input with an InputError, which the error handlers turn into a 4xx.
"""

from __future__ import annotations

import unicodedata

from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.image.encoding import CANVAS_KEYS, EDGE_KEYS, EDGE_NUMBERS, EDGE_SWITCHES, OutputOptions
from cvunet_matting.image.imaging import probe
from cvunet_matting.pipeline import submission

from .support import settings

MAX_NAME_CHARS = 1024  # a display name; the stored output name is cut much shorter (naming.py)


CANVAS_TEXT = ("crop_margin", "size", "scale", "position")  # strings in JSON as in forms
CANVAS_FIELDS = ("crop", *CANVAS_TEXT, "bg_blur")  # the canvas options sent as values (bg_image is a file)


def parse_options(values, form: bool = True, files=None) -> OutputOptions:
    """Output options from form fields (strings) or a JSON object (flags booleans, numbers integers);
    a background image comes as the upload `bg_image` among `files` (forms only)."""
    values = {} if values is None else values
    if not hasattr(values, "get"):
        raise InputError("options must be an object", code=ErrorCode.BAD_OPTION)
    if values.get("bg_image") not in (None, ""):
        raise InputError(
            "bg_image is an image: send it as a multipart file named 'bg_image' (with the image, the batch or"
            " the re-render), not as a value",
            code=ErrorCode.BAD_OPTION,
        )
    drawn = {name: values.get(name) for name in CANVAS_FIELDS}
    if form and not all(v is None or isinstance(v, str) for v in drawn.values()):
        raise InputError("form fields are strings", code=ErrorCode.BAD_OPTION)
    if not form and not (
        isinstance(drawn["crop"], bool | None)
        and all(isinstance(drawn[n], str | None) for n in CANVAS_TEXT)
        and (drawn["bg_blur"] is None or type(drawn["bg_blur"]) is int)
    ):
        message = "crop is a boolean, crop_margin, size, scale and position strings, bg_blur an integer"
        raise InputError(message, code=ErrorCode.BAD_OPTION)
    return _parse_options(values, form, drawn, background_upload(files))


def background_upload(files) -> bytes | None:
    """The bytes of the `bg_image` upload, checked as any image upload is; None without one."""
    uploads = [] if files is None else files.getlist("bg_image")
    if len(uploads) > 1:
        raise InputError("one bg_image at most", code=ErrorCode.BAD_OPTION)
    if not uploads:
        return None
    data = uploads[0].read()
    if not data and not uploads[0].filename:
        return None  # the empty part a browser sends for an empty file picker
    try:
        probe(data, settings().max_pixels)
    except InputError as exc:
        raise InputError(f"bg_image: {exc.reason}", code=exc.code) from None
    return data


def _parse_options(values, form: bool, drawn: dict, background: bytes | None) -> OutputOptions:
    fmt, color, alpha = values.get("format"), values.get("bg_color"), values.get("alpha_only", False)
    alpha_types = str if form else bool
    if not all(v is None or isinstance(v, str) for v in (fmt, color)) or not isinstance(alpha, alpha_types | bool):
        raise InputError("format and bg_color must be strings, alpha_only a boolean", code=ErrorCode.BAD_OPTION)
    edges = {name: values.get(name) for name in EDGE_KEYS}
    if form and not all(v is None or isinstance(v, str) for v in edges.values()):
        raise InputError("form fields are strings", code=ErrorCode.BAD_OPTION)
    if not form:
        flags_ok = all(isinstance(edges[n], bool | None) for n in EDGE_SWITCHES)
        numbers_ok = all(edges[n] is None or type(edges[n]) is int for n in EDGE_NUMBERS)
        if not (flags_ok and numbers_ok):
            message = "refine, decontaminate and solidify are booleans, the others integers"
            raise InputError(message, code=ErrorCode.BAD_OPTION)
    return OutputOptions.parse(fmt, color, alpha, **edges, **drawn, background=background)


OPTION_FIELDS = ("format", "bg_color", "alpha_only", *EDGE_KEYS, *CANVAS_KEYS)
FILE_OPTIONS = ("bg_image",)  # options sent as files


def check_api_fields(form, files, file_field: str, one_file: bool) -> None:
    """Refuse form fields nobody reads: a misspelt option (`alpha-threshold`) ran with the default,
    and a second file on /images was dropped without a word."""
    # A part without a name comes through as None.
    unknown = sorted((set(form) - set(OPTION_FIELDS)) | (set(files) - {file_field, *FILE_OPTIONS}), key=str)
    if unknown:
        named = ", ".join("a field without a name" if name is None else repr(name) for name in unknown)
        raise InputError(
            f"unknown form field(s) {named}: the image goes in {file_field!r}, the options"
            f" are {', '.join(OPTION_FIELDS)}",
            code=ErrorCode.UNKNOWN_FIELD,
        )
    if one_file and len(files.getlist(file_field)) > 1:
        raise InputError(
            "one image per request here: send several to /api/v1/batches as 'files'", code=ErrorCode.ONE_FILE
        )


FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def check_option_fields(form, files, mimetype: str, length: int | None) -> None:
    """A re-render's form holds options only: a misspelt one, a file, or a body that is no form (JSON,
    say, which would be read as no options at all) is refused, not ignored."""
    if length and mimetype not in FORM_TYPES:
        raise InputError(
            f"send the options as form fields ({' or '.join(FORM_TYPES)}), not {mimetype or 'an untyped body'}",
            code=ErrorCode.BAD_REQUEST,
        )
    unknown = sorted((set(form) - set(OPTION_FIELDS)) | (set(files) - set(FILE_OPTIONS)), key=str)
    if unknown:
        named = ", ".join("a field without a name" if name is None else repr(name) for name in unknown)
        raise InputError(
            f"unknown form field(s) {named}: a re-render takes options only ({', '.join(OPTION_FIELDS)})",
            code=ErrorCode.UNKNOWN_FIELD,
        )


def check_json_fields(body: dict, options) -> None:
    """The folder request's JSON, held to the same rule: a key nobody reads is refused, not ignored."""
    unknown = sorted(set(body) - {"folder", "options"}, key=str)
    if isinstance(options, dict):
        unknown += [f"options.{name}" for name in sorted(set(options) - set(OPTION_FIELDS), key=str)]
    if unknown:
        raise InputError(
            f'unknown field(s) {", ".join(map(repr, unknown))}: send {{"folder": ..., "options": {{...}}}} with'
            f" options among {', '.join(OPTION_FIELDS)}",
            code=ErrorCode.UNKNOWN_FIELD,
        )


def check_filename(name: str | None) -> str:
    """An upload's name as sent, refused (400) when it holds control characters or is absurdly long."""
    name = name or "image"
    if len(name) > MAX_NAME_CHARS:
        raise InputError(f"a file name is at most {MAX_NAME_CHARS} characters", code=ErrorCode.BAD_FILENAME)
    if any(unicodedata.category(c) in {"Cc", "Cs"} for c in name):
        raise InputError("a file name must not contain control characters (such as NUL)", code=ErrorCode.BAD_FILENAME)
    return name


def one_upload(files) -> submission.Item:
    """The image sent as the form field 'file', read whole (its name checked, never used as a path)."""
    upload = files.get("file")
    if upload is None:
        raise InputError("send the image as the multipart form field 'file'", code=ErrorCode.NO_FILE)
    return submission.Item(check_filename(upload.filename), upload.read())


def probe_uploads(files) -> tuple[list[submission.Item], list[dict]]:
    """Read every upload, refusing bad ones from their header alone; names are never used as paths.

    Every name is checked before any upload is read, so a bad name stores nothing."""
    files = list(files)
    for upload in files:
        check_filename(upload.filename)
    items, refused = [], []
    for upload in files:
        data = upload.read()
        if not upload.filename and not data:
            continue  # the empty part a browser sends for an empty file picker
        name = upload.filename or "image"
        try:
            probe(data, settings().max_pixels)
            items.append(submission.Item(name, data))
        except InputError as exc:
            refused.append({"filename": name, "code": exc.code, "message": exc.reason})
    return items, refused
