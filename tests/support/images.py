"""Images for tests: random pixels, PNG bytes of them, and a tiny CV-UNet-shaped model."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Uniform random uint8 pixels: nothing compresses them and each seed gives other ones."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def png_bytes(seed: int, size: tuple[int, int] = (48, 64)) -> bytes:
    """A colour PNG of `size` (rows, columns) of noise; equal seeds give equal bytes."""
    import cv2

    ok, buf = cv2.imencode(".png", noise((*size, 3), seed))
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return buf.tobytes()


def build_tiny_model(path: Path) -> Path:
    """A CV-UNet-shaped ONNX (input_image HxWx3 -> output_png HxWx4) whose alpha is the brightness."""
    import onnx
    from onnx import TensorProto, helper

    path.parent.mkdir(parents=True, exist_ok=True)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
    nodes = [
        helper.make_node("ReduceMean", ["input_image", "axes"], ["grey"], keepdims=1),
        helper.make_node("Concat", ["input_image", "grey"], ["output_png"], axis=2),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cvunet",
        [helper.make_tensor_value_info("input_image", TensorProto.FLOAT, ["h", "w", 3])],
        [helper.make_tensor_value_info("output_png", TensorProto.FLOAT, ["h", "w", 4])],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
