"""Everything drawn after the model's matte, in one place for the worker (matting.py) and the
re-render (rendering.py), so both give the same bytes for the same options: the edge steps, the
canvas (crop, scale, position, size) and the backdrop (an image or the blurred photo)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import layout
from .backdrop import Blurred, cover
from .edges import finish
from .encoding import OutputOptions
from .imaging import decode
from .solid import Distances

# The edge steps done elsewhere: (rgb, input_alpha) -> (rgb, alpha), as edges.finish returns them.
Finisher = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


def draw(
    rgb: np.ndarray,
    raw_alpha: np.ndarray,
    input_alpha: np.ndarray | None,
    options: OutputOptions,
    background: bytes | None = None,
    max_pixels: int = 0,
    maps: Distances | None = None,
    finished: Finisher | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(rgb, alpha, backdrop or None) for encoding.encode; rgb may be changed in place. `background`:
    the bytes of options.bg_image (decoded within `max_pixels`). Raises InputError `empty_subject`
    for a crop with no subject. `maps`: solid.distances(raw_alpha), when the caller has them (edges.finish).
    `finished`: the edge steps done another way (the model's ONNX suffix ran them on the device): called
    as finish() would be, after the blurred backdrop has taken the photo as it came."""
    blurred = Blurred(rgb, options.bg_blur) if options.bg_blur and not options.alpha_only else None
    if finished is not None:
        rgb, alpha = finished(rgb, input_alpha)
    else:
        rgb, alpha = finish(rgb, raw_alpha, input_alpha, options, maps)
    height, width = alpha.shape
    the_plan = layout.Plan(width, height, (0, 0))
    if options.moves_pixels:
        the_plan = layout.plan(alpha, options)
        if the_plan != layout.Plan(width, height, (0, 0)):  # a size alone leaves the frame as it is
            rgb, alpha = layout.draw(rgb, alpha, the_plan)
        rgb, alpha = layout.shrink(rgb, alpha, options.size)
        height, width = alpha.shape
    if blurred is not None:
        return rgb, alpha, blurred.draw(the_plan, width, height)
    if options.bg_image is not None:
        if background is None:
            raise ValueError(f"options name the background {options.bg_image} but its bytes were not given")
        return rgb, alpha, cover(decode(background, max_pixels), width, height)
    return rgb, alpha, None
