"""A finished cut-out drawn again from its raw matte and its input, without the model.

The worker keeps the model's alpha, as predict_alpha returns it (at the photo's size, before any edge
step), beside each result as a grey PNG (storage.raw_matte_path). Everything after the model is a
function of that matte, the input's bytes and the options (edges.finish, then encoding.encode), so
render() gives, for the same options, the very bytes the worker wrote; other edge controls, another
background colour or format, a new result, in a fraction of a second on the web side. (A worker that
ran the edge steps on its GPU, model/edge_suffix.py, wrote a cut-out equal to this one within the
suffix's stated tolerance, tests/test_edge_suffix.py, not byte for byte.)

Why the full-size matte and not the model's own 1024 x 1024 answer: the session hands the matte over
at full size (model/session.py resizes it, in another process on an overlapped worker), and a grey
PNG of a smooth, upscaled matte is small (a few hundred KB at 12 MP) and cheap to write (level 1,
filter Up: see benchmarks/bench_rerender.py for both figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cvunet_matting.errors import ErrorCode, InputError

from .drawing import draw
from .encoding import OutputOptions, encode
from .imaging import decode
from .input_alpha import read_alpha
from .png import encode_png

# Bump when the pixels a result holds change for the same options (edge refinement and
# decontamination came with 2, solid subjects by default with 3, the cheaper edge steps with 4: the
# colour estimate on a 512-pixel copy; 5, the model's input shrunk bilinearly from a photo under twice
# its side, resize.shrink_for_model, so the model's matte moves a little; 6, the matte's working copies
# bilinear, band.linear_copy, the colour estimate's wide pass on a quarter copy and the faintest alpha's
# colours left alone, foreground.WIDE_FX and COLOUR_LOW; 7, the photo's working copy kept in float after
# its whole blocks, resize.shrink_float, and the box means and the final colour estimate in fewer float
# passes, band.box_mean and foreground._estimate_at, a level apart on a few edge pixels):
# results of an earlier version are not reused for new requests. Everything else it counts happens after
# the model, here and in matting.
POSTPROCESS_VERSION = 7
RAW_MATTE_LEVEL = 1  # the fastest deflate level: the matte is written for every image, read rarely


@dataclass(frozen=True)
class Rendered:
    data: bytes
    width: int
    height: int


def raw_matte_png(alpha: np.ndarray, threads: int = 1) -> bytes:
    """The model's matte (HxW uint8) as the grey PNG kept beside a result: lossless."""
    return encode_png(alpha, RAW_MATTE_LEVEL, threads)


def read_raw_matte(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The kept matte back as HxW uint8; InputError when it is not the matte of an image of `shape`."""
    matte = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if matte is None or matte.dtype != np.uint8 or matte.shape != tuple(shape[:2]):
        raise InputError("the stored raw matte does not fit this task's input", code=ErrorCode.NO_MATTE)
    return matte


def render(
    input_data: bytes,
    matte_data: bytes,
    options: OutputOptions,
    max_pixels: int,
    threads: int = 1,
    background: bytes | None = None,
) -> Rendered:
    """The cut-out of `input_data` with `options` (and options.bg_image's bytes, `background`), from its
    kept raw matte: what the worker's matting.matte_bytes writes for the same input and options, byte
    for byte. InputError `empty_subject` for a crop with no subject."""
    rgb = decode(input_data, max_pixels)
    input_alpha = read_alpha(input_data, rgb.shape[:2])
    alpha = read_raw_matte(matte_data, rgb.shape)
    rgb, alpha, backdrop = draw(rgb, alpha, input_alpha, options, background, max_pixels)
    return Rendered(encode(rgb, alpha, options, threads, backdrop), alpha.shape[1], alpha.shape[0])
