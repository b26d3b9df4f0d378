"""A small writer of ONNX nodes for the edge suffix: unique names, constants, and the few compound
steps the edge math repeats (a resample along one axis by host-planned taps, a shrink to a working copy).

Every tensor an image step handles is float32 (1, C, H, W).
"""

from __future__ import annotations

import numpy as np

INT64_MAX = np.iinfo(np.int64).max


class GraphWriter:
    def __init__(self, graph, prefix: str = "edge"):
        self.graph, self.prefix, self.count = graph, prefix, 0
        self._consts: dict[tuple, str] = {}

    def _name(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}_{hint}_{self.count}"

    def op(self, op_type: str, *inputs: str, hint: str = "", **attrs) -> str:
        from onnx import helper

        out = self._name(hint or op_type.lower())
        self.graph.node.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def const(self, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        array = np.asarray(value, dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = self._name("const")
            self.graph.initializer.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def ints(self, *values: int) -> str:
        return self.const(list(values), np.int64)

    def input(self, name: str, elem_type: int, shape: list) -> str:
        from onnx import helper

        self.graph.input.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, name: str, source: str, elem_type: int, shape: list) -> None:
        from onnx import helper

        self.graph.node.append(helper.make_node("Identity", [source], [name]))
        self.graph.output.append(helper.make_tensor_value_info(name, elem_type, shape))

    # Elementwise shorthands.
    def add(self, a: str, b: str) -> str:
        return self.op("Add", a, b)

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", a, b)

    def div(self, a: str, b: str) -> str:
        return self.op("Div", a, b)

    def scalar(self, value: float | np.floating) -> str:
        return self.const(value)

    def clip(self, x: str, low: float, high: float) -> str:
        return self.op("Clip", x, self.scalar(low), self.scalar(high))

    def channel(self, x: str, index: int, count: int = 1) -> str:
        """Channels index .. index+count-1 of (1, C, H, W)."""
        return self.op("Slice", x, self.ints(index), self.ints(index + count), self.ints(1))

    def concat(self, *parts: str) -> str:
        return self.op("Concat", *parts, axis=1)

    def to_uint8_value(self, x: str) -> str:
        """What .astype(np.uint8) of a value already in 0..255 keeps: the whole part."""
        return self.op("Floor", x)

    # Compound steps.
    def resample(self, x: str, taps: str, axis: int) -> str:
        """out[.., i, ..] = sum_k x[.., idx[k, i], ..] * weight[k, i] along `axis` (2: rows, 3: columns);
        `taps` names the two inputs taps_idx (K x n, int64) and taps_w (K x n, float32)."""
        gathered = self.op("Gather", x, taps + "_idx", axis=axis)  # K and n where the axis was
        spread = self.ints(0, 1, 4) if axis == 2 else self.ints(0, 1, 2)
        weight = self.op("Unsqueeze", taps + "_w", spread)
        return self.op("ReduceSum", self.mul(gathered, weight), self.ints(axis), keepdims=0)

    def separable(self, x: str, taps: str) -> str:
        """Rows by taps_rows, then columns by taps_cols."""
        return self.resample(self.resample(x, taps + "_rows", 2), taps + "_cols", 3)

    def block_mean(self, x: str, plan: str, rounded: bool) -> str:
        """resize.shrink's first step: the image cut to whole blocks of f x f and each block averaged;
        `plan` names an int64 input [f, rows, cols] (f = 1: the image as it is). `rounded`: to a uint8
        value, as OpenCV does for a uint8 image (half up for f = 2, its special case, else half even)."""
        f, rows, cols = (self.op("Slice", plan, self.ints(i), self.ints(i + 1)) for i in range(3))
        ends = self.op("Concat", self.mul(rows, f), self.mul(cols, f), axis=0)
        cut = self.op("Slice", x, self.ints(0, 0), ends, self.ints(2, 3))
        shape = self.op("Concat", self.ints(1, 0), rows, f, cols, f, axis=0)
        blocks = self.op("Reshape", cut, shape)
        mean = self.op("ReduceMean", blocks, axes=[3, 5], keepdims=0)
        if not rounded:
            return mean
        half_up = self.op("Floor", self.add(mean, self.scalar(0.5)))
        return self.op("Where", self.op("Equal", f, self.ints(2)), half_up, self.op("Round", mean))

    def shrink(self, x: str, plan: str, taps: str, rounded: bool) -> str:
        """resize.shrink to a working copy: block means, then INTER_AREA by taps."""
        small = self.separable(self.block_mean(x, plan + "_blocks", rounded), taps)
        return self.op("Round", small) if rounded else small

    def box_max(self, x: str, radius: int) -> str:
        """band.grow: a square dilation of `radius`, the image's outside ignored."""
        size = 2 * radius + 1
        return self.op("MaxPool", x, kernel_shape=[size, size], pads=[radius] * 4, strides=[1, 1])
