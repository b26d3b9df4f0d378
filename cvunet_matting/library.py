"""The Python API, as rembg's: `from cvunet_matting import remove, new_session`, no server needed.

`remove(data)` takes what rembg.remove takes (encoded image bytes, a PIL image, or an RGB(A) numpy array)
and gives back the same kind: PNG bytes, a PIL image (RGBA; L for a mask), a numpy array. rembg's
keyword arguments are taken (alpha_matting with its thresholds, only_mask, bgcolor, post_process_mask),
and ours besides: the edge controls (alpha_threshold, opaque_threshold, erode, feather, refine,
decontaminate, solidify) and the output controls (crop, crop_margin, size, scale, position, bg_blur, and
bg_image as an image's encoded bytes), each as the API takes it. The model loads once per session:
pass `session=new_session()` to reuse one (remove() alone keeps one for the process, made on first use).

Mapping rembg's arguments: with alpha_matting, its foreground threshold (240) is our opaque_threshold
and its background threshold (10) our alpha_threshold; its erode size only shaped rembg's trimap and is
ignored, as post_process_mask is (our solidify step, on by default, does that job). Our guided-filter
edge refinement is always on unless refine=False.
"""

from __future__ import annotations

import io
import threading
from typing import Any

import numpy as np
from PIL import Image

from cvunet_matting.config import Settings, get_settings
from cvunet_matting.image.drawing import draw
from cvunet_matting.image.encoding import OutputOptions
from cvunet_matting.image.matting import matte_bytes
from cvunet_matting.image.rembg_models import GENERAL_MODELS
from cvunet_matting.model.protocols import Session
from cvunet_matting.model.session import MattingSession, resolve_model

_default: Session | None = None
_default_lock = threading.Lock()


def new_session(model_name: str | None = None, settings: Settings | None = None) -> MattingSession:
    """Our model, loaded (CVUNET_MODEL, from CVUNET_MODEL_DIR): rembg's general model names are taken
    for it, its special-purpose ones refused (ValueError)."""
    if model_name is not None and model_name not in GENERAL_MODELS:
        raise ValueError(f"model {model_name!r}: this library runs one general model; ask for one of {GENERAL_MODELS}")
    settings = settings or get_settings()
    return MattingSession(*resolve_model(settings), settings)


def default_session() -> Session:
    global _default
    with _default_lock:
        if _default is None:
            _default = new_session()
        return _default


def options_for(only_mask: bool, bgcolor: Any, alpha_matting: bool, thresholds: tuple[int, int], controls: dict):
    """Our output options from rembg's arguments and our controls (bad values: InputError, unknown
    names: TypeError); `bg_image` is the background image's encoded bytes."""
    if alpha_matting:
        controls.setdefault("opaque_threshold", thresholds[0])
        controls.setdefault("alpha_threshold", thresholds[1])
    color = None
    if bgcolor is not None:
        given = tuple(int(c) for c in bgcolor)
        if len(given) not in (3, 4) or (len(given) == 4 and given[3] != 255):
            raise ValueError("bgcolor: (r, g, b) or (r, g, b, 255); only an opaque colour is supported")
        color = ",".join(map(str, given[:3]))
    background = controls.pop("bg_image", None)
    return OutputOptions.parse("png", color, bool(only_mask), **controls, background=background), background


def remove(
    data: bytes | Image.Image | np.ndarray,
    alpha_matting: bool = False,
    alpha_matting_foreground_threshold: int = 240,
    alpha_matting_background_threshold: int = 10,
    alpha_matting_erode_size: int = 10,
    session: Session | None = None,
    only_mask: bool = False,
    post_process_mask: bool = False,
    bgcolor: tuple[int, ...] | None = None,
    force_return_bytes: bool = False,
    **controls: Any,
) -> bytes | Image.Image | np.ndarray:
    """The cut-out of `data`, of the same kind (PNG bytes for bytes, or with force_return_bytes)."""
    thresholds = (alpha_matting_foreground_threshold, alpha_matting_background_threshold)
    options, background = options_for(only_mask, bgcolor, alpha_matting, thresholds, controls)
    session = session or default_session()
    if isinstance(data, bytes | bytearray | memoryview):
        return matte_bytes(bytes(data), options, session, get_settings(), background=background).data
    if isinstance(data, np.ndarray):
        image = Image.fromarray(data)
    elif isinstance(data, Image.Image):
        image = data
    else:
        raise TypeError(f"remove() takes bytes, a PIL image or a numpy array, not {type(data).__name__}")
    result = cut_out(image, options, session, background)
    if force_return_bytes:
        buffer = io.BytesIO()
        result.save(buffer, "PNG")
        return buffer.getvalue()
    return np.asarray(result) if isinstance(data, np.ndarray) else result


def cut_out(image: Image.Image, options: OutputOptions, session: Session, background: bytes | None) -> Image.Image:
    """The model's matte of the image, then what the worker draws after it (edges, canvas, backdrop):
    RGBA, opaque where a background was asked for, or L for the mask alone."""
    rgb = np.array(image.convert("RGB"))
    input_alpha = np.asarray(image.getchannel("A")) if "A" in image.getbands() else None
    raw_alpha = session.predict_alpha(rgb)
    rgb, alpha, backdrop = draw(rgb, raw_alpha, input_alpha, options, background, get_settings().max_pixels)
    if options.alpha_only:
        return Image.fromarray(alpha, "L")
    under = backdrop if backdrop is not None else options.bg_color
    if under is not None:  # rembg gives an opaque RGBA image here
        a = alpha[..., None].astype(np.uint16)
        rgb = ((rgb * a + np.asarray(under, np.uint16) * (255 - a) + 127) // 255).astype(np.uint8)
        alpha = np.full_like(alpha, 255)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
