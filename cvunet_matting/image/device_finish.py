"""The edge steps when the model's session ran them on its device (model/edge_suffix.py): what is left
for the host's cores is cheap (the user's controls, the input's own alpha).

The suffix decontaminates against its own finished matte; the user's edge controls (threshold,
erode, feather, opaque) change that matte after it, so when any of them is set and colours are
written, the colours are estimated again here against the controlled matte, as edges.finish does.
"""

from __future__ import annotations

import numpy as np

from cvunet_matting.model.edge_steps import EdgeMath
from cvunet_matting.model.protocols import EdgeOutputs

from . import band, edges, foreground, solid
from .edges import controls, with_input_alpha
from .encoding import OutputOptions
from .foreground import decontaminate, writable


def edge_math() -> EdgeMath:
    """The CPU edge steps' numbers, read from their modules when called, for the suffix to follow."""
    return EdgeMath(
        refine_side=edges.SIDE,
        radius=edges.RADIUS,
        eps=edges.EPS,
        edge_low=band.EDGE_LOW,
        edge_high=band.EDGE_HIGH,
        work_side=foreground.SIDE,
        wide=foreground.WIDE,
        narrow=foreground.NARROW,
        fade=foreground.FADE,
        solid_side=solid.SIDE,
        band_share=solid.BAND_SHARE,
        min_band_px=solid.MIN_BAND_PX,
        half=solid.HALF,
        wide_fx=foreground.WIDE_FX,
        unit_side=foreground.UNIT_SIDE,
        quick_matte=True,
        solid_from_raw=False,  # solidify measures the refined matte's contour (edges.finish)
        colour_low=foreground.COLOUR_LOW,
        linear_matte=True,
        float_photo=True,
    )


def has_controls(options: OutputOptions) -> bool:
    return bool(options.alpha_threshold or options.opaque_threshold or options.erode or options.feather)


def finish_from_device(
    rgb: np.ndarray, done: EdgeOutputs, input_alpha: np.ndarray | None, options: OutputOptions
) -> tuple[np.ndarray, np.ndarray]:
    """edges.finish's (rgb, alpha) from the suffix's outputs (run with options.refine and .solidify)."""
    alpha = controls(done.alpha, options.alpha_threshold, options.erode, options.feather, options.opaque_threshold)
    if options.decontaminate and not options.alpha_only:
        rgb = decontaminate(rgb if writable(rgb) else rgb.copy(), alpha) if has_controls(options) else done.foreground
    return rgb, with_input_alpha(alpha, input_alpha)
