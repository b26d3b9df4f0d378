"""The graphs of the three edge steps, each by its CPU function's math (image/edges.refine,
image/solid.solidify, image/foreground.decontaminate), for the edge suffix (edge_suffix.py).

Every image is float32 (1, C, H, W) in 0-255 unless named a copy (0-1); the resizes and boxes are
gathers by the host's taps (edge_taps.py), named by the plan's inputs (edge_suffix.plan).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .edge_graph import INT64_MAX, GraphWriter

_INF = 1e9
# The 5x5 chamfer mask of cv2.distanceTransform (DIST_L2, DIST_MASK_5): 1, 1.4 and 2.1969 a step.
_CHAMFER = [
    (dy, dx, 1.0 if abs(dy) + abs(dx) == 1 else 1.4 if abs(dy) == abs(dx) else 2.1969)
    for dy in range(-2, 3)
    for dx in range(-2, 3)
    if (dy, dx) != (0, 0) and sorted((abs(dy), abs(dx))) in ([0, 1], [1, 1], [1, 2])
]


@dataclass(frozen=True)
class EdgeMath:
    """The CPU edge steps' numbers (image/edges.py, band.py, solid.py, foreground.py)."""

    refine_side: int
    radius: int
    eps: float
    edge_low: int
    edge_high: int
    work_side: int
    wide: int
    narrow: int
    fade: int
    solid_side: int
    band_share: float
    min_band_px: float
    half: int
    # Where the CPU path's edge-speed changes (POSTPROCESS_VERSION 4) differ, main's values by default:
    wide_fx: float = 0.25  # the wide pass's copy, as a share of the colour estimate's copy
    unit_side: int = 1024  # the box sizes are in pixels of a copy this long (or of the image if smaller)
    quick_matte: bool = False  # the matte's copies shrunk by whole blocks then bilinear (POSTPROCESS_VERSION 4-5)
    solid_from_raw: bool = False  # solidify's distance maps of the raw matte (shared with confidence)
    colour_low: int = 1  # the faintest alpha whose colour is estimated (foreground.COLOUR_LOW)
    # The matte's copies shrunk bilinearly from full size (band.linear_copy): refine's of the raw matte,
    # the colour estimate's of the matte before solidify (edges.finish). Where set, quick_matte is unused.
    linear_matte: bool = False
    # The photo's copy kept in float after the whole blocks (resize.shrink_float), not rounded to bytes.
    float_photo: bool = False


def _photo_copy(g: GraphWriter, photo: str, plan: str, math: EdgeMath) -> str:
    """band.working_planes: whole blocks rounded to bytes, then the area step, rounded too where
    math.float_photo is not set."""
    if math.float_photo:
        return g.separable(g.block_mean(photo, plan + "_blocks", True), plan)
    return g.shrink(photo, plan, plan, True)


def refine(g: GraphWriter, photo: str, raw: str, math: EdgeMath) -> str:
    """image/edges.refine: coefficients on the working copy, applied at full size near the edges."""
    unit = g.scalar(np.float32(1 / 255))
    guide = g.mul(_photo_copy(g, photo, "edge_refine", math), unit)
    if math.linear_matte:
        matte = g.mul(g.op("Round", g.separable(raw, "edge_refine_linear")), unit)
    else:
        matte = g.mul(g.shrink(raw, "edge_refine", "edge_refine_matte", True), unit)
    edge = g.op(
        "And",
        g.op("GreaterOrEqual", matte, g.scalar(np.float32(math.edge_low / 255))),
        g.op("LessOrEqual", matte, g.scalar(np.float32(math.edge_high / 255))),
    )
    near = g.box_max(g.op("Cast", edge, to=1), math.radius)

    def box(x: str) -> str:
        return g.separable(x, "edge_refine_box")

    colour = [g.channel(guide, i) for i in range(3)]
    mean_matte, mean_colour = box(matte), [box(c) for c in colour]
    cov = [g.sub(box(g.mul(c, matte)), g.mul(m, mean_matte)) for c, m in zip(colour, mean_colour, strict=True)]
    eps = g.scalar(np.float32(math.eps))
    var = {
        (i, j): g.sub(box(g.mul(colour[i], colour[j])), g.mul(mean_colour[i], mean_colour[j]))
        for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    }
    rr, rg, rb = g.add(var[0, 0], eps), var[0, 1], var[0, 2]
    gg, gb, bb = g.add(var[1, 1], eps), var[1, 2], g.add(var[2, 2], eps)

    def det2(a: str, b: str, c: str, d: str) -> str:
        return g.sub(g.mul(a, b), g.mul(c, d))

    inverse = [det2(gg, bb, gb, gb), det2(rb, gb, rg, bb), det2(rg, gb, rb, gg)]
    inverse += [inverse[1], det2(rr, bb, rb, rb), det2(rg, rb, rr, gb)]
    inverse += [inverse[2], inverse[5], det2(rr, gg, rg, rg)]
    det = g.add(g.add(g.mul(rr, inverse[0]), g.mul(rg, inverse[1])), g.mul(rb, inverse[2]))
    a = [
        g.div(
            g.add(
                g.add(g.mul(inverse[3 * r], cov[0]), g.mul(inverse[3 * r + 1], cov[1])),
                g.mul(inverse[3 * r + 2], cov[2]),
            ),
            det,
        )
        for r in range(3)
    ]
    b = g.sub(
        mean_matte, g.add(g.add(g.mul(a[0], mean_colour[0]), g.mul(a[1], mean_colour[1])), g.mul(a[2], mean_colour[2]))
    )
    zero = g.mul(mean_matte, g.scalar(0.0))
    flat = g.concat(zero, zero, zero, mean_matte)  # a = 0, b = the mean: away from edges alpha stays
    coeffs = g.op("Where", g.op("Greater", near, g.scalar(0.5)), g.concat(*a, b), flat)
    coeffs = g.separable(box(coeffs), "edge_refine_up")
    near_full = g.op("Greater", g.separable(g.box_max(near, math.radius), "edge_refine_near"), g.scalar(0.5))
    pixels = g.mul(photo, unit)
    fitted = g.add(
        g.op("ReduceSum", g.mul(g.channel(coeffs, 0, 3), pixels), g.ints(1), keepdims=1), g.channel(coeffs, 3)
    )
    fitted = g.to_uint8_value(g.clip(g.add(g.mul(fitted, g.scalar(255.0)), g.scalar(0.5)), 0.0, 255.0))
    return g.op("Where", near_full, fitted, raw)


def solidify(g: GraphWriter, alpha: str, math: EdgeMath, contour_of: str | None = None) -> str:
    """image/solid.solidify: distance maps of a small copy (chamfer relaxation, clipped at twice the
    band, which is all the ramp reads), ramps, resized back, then the matte clamped between them.
    `contour_of`: the matte whose 0.5 contour is measured, when not `alpha` itself."""
    small = g.op("Round", g.separable(contour_of or alpha, "edge_solid_down"))
    inside = g.op("GreaterOrEqual", small, g.scalar(float(math.half)))
    inf, zero = g.mul(g.add(small, g.scalar(1.0)), g.scalar(_INF)), g.mul(small, g.scalar(0.0))
    dist = g.concat(g.op("Where", inside, inf, zero), g.op("Where", inside, zero, inf))
    # A path of cost D takes at most D steps of at least 1: this many rounds find every distance
    # the ramp can see (at most twice the widest band a copy can have).
    widest = max(math.min_band_px, math.band_share * math.solid_side)
    for _ in range(int(np.ceil(2 * widest)) + 1):
        padded = g.op("Pad", dist, g.ints(0, 0, 2, 2, 0, 0, 2, 2), g.scalar(_INF), mode="constant")
        for dy, dx, step in _CHAMFER:
            ends = [-(2 - d) if d < 2 else INT64_MAX for d in (dy, dx)]
            shifted = g.op("Slice", padded, g.ints(2 + dy, 2 + dx), g.ints(*ends), g.ints(2, 3))
            dist = g.op("Min", dist, g.add(shifted, g.scalar(step)))
    band = "edge_solid_band"
    twice, width, gain = (g.op("Slice", band, g.ints(i), g.ints(i + 1)) for i in range(3))
    ramp = g.to_uint8_value(g.clip(g.add(g.mul(g.sub(g.op("Min", dist, twice), width), gain), g.scalar(0.5)), 0, 255))
    floor = g.op("Round", g.separable(g.channel(ramp, 0), "edge_solid_up"))
    ceiling = g.op("Round", g.separable(g.sub(g.scalar(255.0), g.channel(ramp, 1)), "edge_solid_up"))
    return g.op("Min", g.op("Max", alpha, floor), ceiling)


def _estimate(g: GraphWriter, colour: str, alpha: str, fore: str, back: str) -> str:
    """foreground._estimate: F = F_mean + a (I - a F_mean - (1 - a) B_mean), clipped to 0..1."""
    rest = g.sub(g.sub(colour, g.mul(alpha, fore)), g.mul(g.sub(g.scalar(1.0), alpha), back))
    return g.clip(g.add(fore, g.mul(alpha, rest)), 0.0, 1.0)


def decontaminate(g: GraphWriter, photo: str, alpha: str, math: EdgeMath, weighed_by: str | None = None) -> str:
    """image/foreground.decontaminate: blur-fusion's two passes, then the estimate at full size.
    `weighed_by`: the matte whose copy weighs the means (with linear_matte: the matte before solidify)."""
    unit, tiny, one = g.scalar(np.float32(1 / 255)), g.scalar(np.float32(1e-5)), g.scalar(1.0)
    colour = g.mul(_photo_copy(g, photo, "edge_work", math), unit)
    if math.linear_matte:
        matte = g.mul(g.op("Round", g.separable(weighed_by or alpha, "edge_work_linear")), unit)
    else:
        matte = g.mul(g.shrink(alpha, "edge_work", "edge_work_matte", True), unit)
    quarter, quarter_alpha = g.separable(colour, "edge_wide_copy"), g.separable(matte, "edge_wide_alpha")
    weight = g.separable(quarter_alpha, "edge_wide")
    fore = g.div(g.separable(g.mul(quarter, quarter_alpha), "edge_wide"), g.add(weight, tiny))
    back = g.separable(g.mul(quarter, g.sub(one, quarter_alpha)), "edge_wide")
    back = g.separable(g.div(back, g.add(g.sub(one, weight), tiny)), "edge_wide_up")
    fore = g.separable(fore, "edge_wide_up")
    soft = g.op("And", g.op("Greater", matte, g.scalar(0.0)), g.op("Less", matte, one))
    first = g.op("Where", soft, _estimate(g, colour, matte, fore, back), colour)
    sums = g.concat(g.mul(first, matte), g.mul(back, g.sub(one, matte)), matte)
    sums = g.separable(g.separable(sums, "edge_narrow"), "edge_work_up")
    weight = g.channel(sums, 6)
    fore = g.div(g.channel(sums, 0, 3), g.add(weight, tiny))
    back = g.div(g.channel(sums, 3, 3), g.add(g.sub(one, weight), tiny))
    a, pixels = g.mul(alpha, unit), g.mul(photo, unit)
    fade = g.op("Min", g.mul(a, g.scalar(np.float32(255 / math.fade))), one)
    estimate = g.add(pixels, g.mul(fade, g.sub(_estimate(g, pixels, a, fore, back), pixels)))
    band = g.op(
        "And",
        g.op("GreaterOrEqual", alpha, g.scalar(float(math.colour_low))),
        g.op("LessOrEqual", alpha, g.scalar(float(math.edge_high - 1))),
    )
    fitted = g.to_uint8_value(g.add(g.mul(estimate, g.scalar(255.0)), g.scalar(0.5)))
    return g.op("Where", band, fitted, photo)
