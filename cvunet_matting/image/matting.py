"""One image, bytes in and bytes out: decode, predict the alpha, finish its edges, encode.

Shared by the CLI and the workers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial

from cvunet_matting.config import Settings
from cvunet_matting.model.protocols import EdgeSession, Session

from .confidence import confidence
from .device_finish import finish_from_device
from .drawing import draw
from .encoding import OutputOptions, encode
from .imaging import decode
from .input_alpha import read_alpha
from .rendering import raw_matte_png
from .solid import distances

# The keys of MatteResult.timings, in the order they happen ("postprocess" includes the edge steps).
MODEL_STAGES = ("decode", "preprocess", "inference", "postprocess", "encode")


@dataclass
class MatteResult:
    data: bytes
    width: int
    height: int
    timings: dict = field(default_factory=dict)  # seconds per stage
    confidence: float | None = None  # how sure the model was (confidence.py), from the raw matte
    raw_matte: bytes | None = None  # the model's matte as a grey PNG, for re-renders (rendering.py)


def matte_bytes(
    data: bytes,
    options: OutputOptions,
    session: Session,
    settings: Settings,
    keep_raw: bool = False,
    background: bytes | None = None,
) -> MatteResult:
    """Raise InputError for a bad image (or `empty_subject`, a crop with no subject); the original
    pixels are kept but at the edges, alpha is added. `keep_raw`: the model's matte comes back too
    (MatteResult.raw_matte), its encoding counted in "encode". `background`: options.bg_image's bytes."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    rgb = decode(data, settings.max_pixels)
    input_alpha = read_alpha(data, rgb.shape[:2])
    timings["decode"] = time.perf_counter() - clock
    done = None
    if isinstance(session, EdgeSession) and session.edges_on_device:  # the device ran the edge steps
        done = session.predict_edges(rgb, options.refine, options.solidify, timings)
        raw_alpha, maps = done.raw, None
        clock = time.perf_counter()
    else:
        raw_alpha = session.predict_alpha(rgb, timings)
        clock = time.perf_counter()
        maps = distances(raw_alpha)  # the contour's distance maps: the score's, and solidify's when refine is off
    score = confidence(raw_alpha, maps)  # of the model's own matte: the edge steps hide the doubt it measures
    # raw_alpha is left as it was; the canvas and backdrop are drawn here too
    finished = None if done is None else partial(device_finished, done=done, options=options)
    rgb, alpha, backdrop = draw(rgb, raw_alpha, input_alpha, options, background, settings.max_pixels, maps, finished)
    timings["postprocess"] = timings.get("postprocess", 0.0) + time.perf_counter() - clock
    clock = time.perf_counter()
    out = encode(rgb, alpha, options, settings.encode_threads, backdrop)
    raw = raw_matte_png(raw_alpha, settings.encode_threads) if keep_raw else None
    timings["encode"] = time.perf_counter() - clock
    return MatteResult(out, rgb.shape[1], rgb.shape[0], timings, score, raw)


def device_finished(rgb, input_alpha, *, done, options: OutputOptions):
    """drawing.draw's finisher when the model's suffix ran the edge steps on the device."""
    return finish_from_device(rgb, done, input_alpha, options)
