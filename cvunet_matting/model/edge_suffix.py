"""The edge steps as an ONNX suffix of the model: on a GPU the device returns the full-size matte and
the cut-out's colours, and the host's cores only decode, encode and apply the user's controls.

Appended at load (like graph_edit's uint8 prefix) to the model's uint8 alpha: the upscale to the photo's
size (the raw matte), image/edges.refine (guided filter on a working copy, applied near the edges),
image/solid.solidify (the distance maps by chamfer relaxation) and image/foreground.decontaminate
(blur-fusion), in the CPU path's order and by its math, as dense gathers, box filters and elementwise
steps. Sizes are planned on the host (edge_taps.py: where each resize and box reads) and fed as inputs.
The numbers the math uses (EdgeMath) are handed in by the caller, read from the image layer's own
modules, which this layer may not import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import edge_taps as taps
from .edge_graph import INT64_MAX, GraphWriter
from .providers import CUDA, TENSORRT

PHOTO, FLAGS = "edge_photo", "edge_flags"  # flags: [refine, solidify]
MATTE = "edge_matte"  # the suffix alone: the model's alpha as uint8 values, (1, 1, h, w)
RAW, ALPHA, FOREGROUND = "edge_raw", "edge_alpha", "edge_foreground"
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


def edges_wanted(setting: str, provider: str) -> bool:
    """CVUNET_EDGES_ON_DEVICE for a session whose first provider is `provider`: `auto` is on for CUDA
    and TensorRT (the device is idle while the host's cores would do the edge steps) and off on the
    CPU, where the suffix would only take the same cores, slower than OpenCV (make bench-edges)."""
    return setting == "on" or (setting == "auto" and provider in {CUDA, TENSORRT})


def _copy_size(shape: tuple[int, int], side: int) -> tuple[int, int, float]:
    height, width = shape
    scale = min(1.0, side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale)), scale


def _blocks(shape: tuple[int, int], small: tuple[int, int]) -> np.ndarray:
    factor = min(shape[1] // small[1], shape[0] // small[0])
    factor = factor if factor >= 2 else 1
    return np.array([factor, shape[0] // factor, shape[1] // factor], np.int64)


def _both(feeds: dict, name: str, rows: taps.Taps, cols: taps.Taps) -> None:
    for axis, (idx, weight) in (("rows", rows), ("cols", cols)):
        feeds[f"{name}_{axis}_idx"], feeds[f"{name}_{axis}_w"] = idx, weight


def _shrink_plan(feeds: dict, name: str, shape: tuple[int, int], small: tuple[int, int]) -> None:
    blocks = _blocks(shape, small)
    feeds[name + "_blocks"] = blocks
    _both(feeds, name, taps.area(int(blocks[1]), small[0]), taps.area(int(blocks[2]), small[1]))


def plan(shape: tuple[int, int], model_size: tuple[int, int], math: EdgeMath) -> dict[str, np.ndarray]:
    """The suffix's geometry inputs for a photo of `shape` (height, width)."""
    H, W = shape
    feeds: dict[str, np.ndarray] = {}
    _both(feeds, "edge_raw", taps.linear(model_size[0], H, True), taps.linear(model_size[1], W, True))
    h, w, _ = _copy_size(shape, math.refine_side)
    _shrink_plan(feeds, "edge_refine", shape, (h, w))
    size = 2 * math.radius + 1
    _both(feeds, "edge_refine_box", taps.box(h, size, False), taps.box(w, size, False))
    _both(feeds, "edge_refine_up", taps.remap(h, H), taps.remap(w, W))
    _both(feeds, "edge_refine_near", taps.nearest(h, H), taps.nearest(w, W))
    sh, sw, scale = _copy_size(shape, math.solid_side)
    _both(feeds, "edge_solid_down", taps.linear(H, sh, True), taps.linear(W, sw, True))
    _both(feeds, "edge_solid_up", taps.linear(sh, H, True), taps.linear(sw, W, True))
    band = max(math.min_band_px, math.band_share * max(shape)) * scale
    feeds["edge_solid_band"] = np.array([2 * band, band, 255 / band], np.float32)
    h, w, _ = _copy_size(shape, math.work_side)
    _shrink_plan(feeds, "edge_work", shape, (h, w))
    qh, qw = round(h * 0.25), round(w * 0.25)
    _both(feeds, "edge_quarter", taps.area(h, qh, 4.0), taps.area(w, qw, 4.0))
    _both(feeds, "edge_quarter_alpha", taps.area(h, qh), taps.area(w, qw))
    wide = math.wide // 4
    _both(feeds, "edge_wide", taps.box(qh, wide, True), taps.box(qw, wide, True))
    _both(feeds, "edge_wide_up", taps.remap(qh, h), taps.remap(qw, w))
    _both(feeds, "edge_narrow", taps.box(h, math.narrow, True), taps.box(w, math.narrow, True))
    _both(feeds, "edge_work_up", taps.remap(h, H), taps.remap(w, W))
    return feeds


def append_edge_suffix(graph, alpha_uint8: str, math: EdgeMath) -> None:
    """Append the suffix to `graph`, whose output `alpha_uint8` is the model's matte as uint8 values."""
    from onnx import TensorProto

    g = GraphWriter(graph)
    _declare_inputs(g, math)
    photo = g.op(
        "Transpose",
        g.op("Cast", g.input(PHOTO, TensorProto.UINT8, ["H", "W", 3]), to=TensorProto.FLOAT),
        perm=[2, 0, 1],
    )
    photo = g.op("Unsqueeze", photo, g.ints(0))  # (1, 3, H, W), 0-255
    flags = g.input(FLAGS, TensorProto.BOOL, [2])
    matte = g.op("Cast", alpha_uint8, to=TensorProto.FLOAT)
    raw = g.op("Round", g.separable(matte, "edge_raw"))
    alpha = g.op("Where", g.op("Gather", flags, g.ints(0), axis=0), _refine(g, photo, raw, math), raw)
    alpha = g.op("Where", g.op("Gather", flags, g.ints(1), axis=0), _solidify(g, alpha, math), alpha)
    foreground = _decontaminate(g, photo, alpha, math)
    for name, value in ((RAW, raw), (ALPHA, alpha)):
        g.output(
            name,
            g.op("Cast", g.op("Squeeze", value, g.ints(0, 1)), to=TensorProto.UINT8),
            TensorProto.UINT8,
            ["H", "W"],
        )
    hwc = g.op("Transpose", g.op("Squeeze", foreground, g.ints(0)), perm=[1, 2, 0])
    g.output(FOREGROUND, g.op("Cast", hwc, to=TensorProto.UINT8), TensorProto.UINT8, ["H", "W", 3])


def suffix_only_model(model_size: tuple[int, int], math: EdgeMath) -> bytes:
    """The suffix as a graph of its own, fed the model's uint8 alpha (MATTE): to time it apart from
    the model (bench-edges), and the shape a batching device process would run after its batch."""
    from onnx import TensorProto, helper

    matte = helper.make_tensor_value_info(MATTE, TensorProto.UINT8, [1, 1, *model_size])
    graph = helper.make_graph([], "edge_suffix", [matte], [])
    append_edge_suffix(graph, MATTE, math)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]).SerializeToString()


def _declare_inputs(g: GraphWriter, math: EdgeMath) -> None:
    from onnx import TensorProto

    for name in plan((64, 48), (8, 8), math):  # the names a plan feeds, whatever the photo's size
        if name.endswith("_idx"):
            g.input(name, TensorProto.INT64, ["K", "n"])
        elif name.endswith("_w"):
            g.input(name, TensorProto.FLOAT, ["K", "n"])
        else:
            g.input(name, TensorProto.INT64 if name.endswith("_blocks") else TensorProto.FLOAT, [3])


def _refine(g: GraphWriter, photo: str, raw: str, math: EdgeMath) -> str:
    """image/edges.refine: coefficients on the working copy, applied at full size near the edges."""
    unit = g.scalar(np.float32(1 / 255))
    guide = g.mul(g.shrink(photo, "edge_refine", "edge_refine", True), unit)
    matte = g.mul(g.shrink(raw, "edge_refine", "edge_refine", True), unit)
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


def _solidify(g: GraphWriter, alpha: str, math: EdgeMath) -> str:
    """image/solid.solidify: distance maps of a small copy (chamfer relaxation, clipped at twice the
    band, which is all the ramp reads), ramps, resized back, then the matte clamped between them."""
    small = g.op("Round", g.separable(alpha, "edge_solid_down"))
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


def _decontaminate(g: GraphWriter, photo: str, alpha: str, math: EdgeMath) -> str:
    """image/foreground.decontaminate: blur-fusion's two passes, then the estimate at full size."""
    unit, tiny, one = g.scalar(np.float32(1 / 255)), g.scalar(np.float32(1e-5)), g.scalar(1.0)
    colour = g.mul(g.shrink(photo, "edge_work", "edge_work", True), unit)
    matte = g.mul(g.shrink(alpha, "edge_work", "edge_work", True), unit)
    quarter, quarter_alpha = g.separable(colour, "edge_quarter"), g.separable(matte, "edge_quarter_alpha")
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
        g.op("GreaterOrEqual", alpha, g.scalar(1.0)),
        g.op("LessOrEqual", alpha, g.scalar(float(math.edge_high - 1))),
    )
    fitted = g.to_uint8_value(g.add(g.mul(estimate, g.scalar(255.0)), g.scalar(0.5)))
    return g.op("Where", band, fitted, photo)
