"""The edge steps as an ONNX suffix of the model: on a GPU the device returns the full-size matte and
the cut-out's colours, and the host's cores only decode, encode and apply the user's controls.

Appended at load (like graph_edit's uint8 prefix) to the model's uint8 alpha: the upscale to the photo's
size (the raw matte), image/edges.refine (guided filter on a working copy, applied near the edges),
image/solid.solidify (the distance maps by chamfer relaxation) and image/foreground.decontaminate
(blur-fusion), in the CPU path's order and by its math, as dense gathers, box filters and elementwise
steps. Sizes are planned on the host (edge_taps.py: where each resize and box reads) and fed as inputs.
The steps' graphs are edge_steps.py's; the numbers they use (EdgeMath) are handed in by the caller,
read from the image layer's own modules, which this layer may not import.
"""

from __future__ import annotations

import numpy as np

from . import edge_taps as taps
from .edge_graph import GraphWriter
from .edge_steps import EdgeMath, decontaminate, refine, solidify
from .providers import CUDA, TENSORRT

PHOTO, FLAGS = "edge_photo", "edge_flags"  # flags: [refine, solidify]
MATTE = "edge_matte"  # the suffix alone: the model's alpha as uint8 values, (1, 1, h, w)
RAW, ALPHA, FOREGROUND = "edge_raw", "edge_alpha", "edge_foreground"
SUFFIX_IR_VERSION = 8  # the lowest that holds opset 15


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


def _shrink_plan(feeds: dict, name: str, shape: tuple[int, int], small: tuple[int, int], quick_matte: bool) -> None:
    """resize.shrink's second step for the photo's copy; for the matte's, the same or bilinear
    (band.quick_shrink)."""
    blocks = _blocks(shape, small)
    feeds[name + "_blocks"] = blocks
    rows, cols = int(blocks[1]), int(blocks[2])
    _both(feeds, name, taps.area(rows, small[0]), taps.area(cols, small[1]))
    second = (lambda n, m: taps.linear(n, m, True)) if quick_matte else taps.area
    _both(feeds, name + "_matte", second(rows, small[0]), second(cols, small[1]))


def plan(shape: tuple[int, int], model_size: tuple[int, int], math: EdgeMath) -> dict[str, np.ndarray]:
    """The suffix's geometry inputs for a photo of `shape` (height, width)."""
    H, W = shape
    feeds: dict[str, np.ndarray] = {}
    _both(feeds, "edge_raw", taps.linear(model_size[0], H, True), taps.linear(model_size[1], W, True))
    h, w, _ = _copy_size(shape, math.refine_side)
    _shrink_plan(feeds, "edge_refine", shape, (h, w), math.quick_matte)
    _both(feeds, "edge_refine_linear", taps.linear(H, h, True), taps.linear(W, w, True))
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
    _shrink_plan(feeds, "edge_work", shape, (h, w), math.quick_matte)
    _both(feeds, "edge_work_linear", taps.linear(H, h, True), taps.linear(W, w, True))
    qh, qw = round(h * math.wide_fx), round(w * math.wide_fx)
    _both(feeds, "edge_wide_copy", taps.area(h, qh, 1 / math.wide_fx), taps.area(w, qw, 1 / math.wide_fx))
    _both(feeds, "edge_wide_alpha", taps.area(h, qh), taps.area(w, qw))
    unit = max(h, w) / min(max(shape), math.unit_side)  # the boxes cover the same share of any image
    wide, narrow = max(1, round(math.wide * unit * math.wide_fx)), max(1, round(math.narrow * unit))
    _both(feeds, "edge_wide", taps.box(qh, wide, True), taps.box(qw, wide, True))
    _both(feeds, "edge_wide_up", taps.remap(qh, h), taps.remap(qw, w))
    _both(feeds, "edge_narrow", taps.box(h, narrow, True), taps.box(w, narrow, True))
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
    alpha = g.op("Where", g.op("Gather", flags, g.ints(0), axis=0), refine(g, photo, raw, math), raw)
    solid = solidify(g, alpha, math, raw if math.solid_from_raw else None)
    before_solid, alpha = alpha, g.op("Where", g.op("Gather", flags, g.ints(1), axis=0), solid, alpha)
    foreground = decontaminate(g, photo, alpha, math, before_solid)
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
    # The IR version opset 15 needs, not the onnx package's newest: onnx may be newer than the runtime
    # (onnx 1.23 writes IR 14, which onnxruntime-gpu 1.31 refuses).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=SUFFIX_IR_VERSION)
    return model.SerializeToString()


def _declare_inputs(g: GraphWriter, math: EdgeMath) -> None:
    from onnx import TensorProto

    for name in plan((64, 48), (8, 8), math):  # the names a plan feeds, whatever the photo's size
        # Dimensions named after the input: onnxruntime takes two inputs' equal names for equal sizes
        # and planned one buffer for two gathers of different sizes ("Shape mismatch attempting to re-use buffer").
        if name.endswith("_idx"):
            g.input(name, TensorProto.INT64, [f"{name}_K", f"{name}_n"])
        elif name.endswith("_w"):
            g.input(name, TensorProto.FLOAT, [f"{name}_K", f"{name}_n"])
        else:
            g.input(name, TensorProto.INT64 if name.endswith("_blocks") else TensorProto.FLOAT, [3])
