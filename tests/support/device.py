"""A simulated device for overlapped-worker tests and `make bench-worker`: an ISNet-shaped ONNX graph
(fixed size, batch fixed to 1, as exported) whose session run is replaced, in the processes given
`simulated_device_env`, by a wait of L ms that holds no CPU (a sleep: the GIL is released), as a
GPU run would. The replacement comes in through a `sitecustomize` module on PYTHONPATH, so nothing
in the package knows about it.
"""

from __future__ import annotations

import os
from pathlib import Path

SITECUSTOMIZE = '''
"""Installed by tests/support/device.py: onnxruntime's run becomes a sleep of CVUNET_SIM_DEVICE_MS."""
import os

if os.environ.get("CVUNET_SIM_DEVICE_MS"):
    import signal
    import time

    import numpy as np
    import onnxruntime

    _LATENCY_S = float(os.environ["CVUNET_SIM_DEVICE_MS"]) / 1000
    _CRASH_ON_BLACK = os.environ.get("CVUNET_SIM_CRASH_ON_BLACK") == "1"
    _MATTE = os.environ.get("CVUNET_SIM_MATTE")  # a grey PNG: the answer (a real model's matte)
    _TYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}
    _cache = {}

    def _answer(meta, batch):
        key = (meta.name, batch)
        if key not in _cache:
            shape = [batch] + [d if isinstance(d, int) else 1 for d in meta.shape[1:]]
            kind = _TYPES[meta.type]
            answer = np.zeros(shape, kind)
            rows, cols = shape[-2], shape[-1]
            if _MATTE:  # a real model's matte (tests/support/mattes.py), at the output's size
                import cv2

                matte = cv2.resize(cv2.imread(_MATTE, cv2.IMREAD_GRAYSCALE), (cols, rows), interpolation=cv2.INTER_AREA)
                answer[...] = matte if kind == np.uint8 else matte.astype(np.float32) / 255
            else:  # a subject in the middle, clear background around it: edges only along its outline
                answer[..., rows // 5 : rows - rows // 5, cols // 4 : cols - cols // 4] = 255 if kind == np.uint8 else 1
            _cache[key] = answer
        return _cache[key]

    def run(self, output_names, input_feed, run_options=None):
        (tensor,) = input_feed.values()
        if _CRASH_ON_BLACK and (tensor.reshape(len(tensor), -1)[:, ::997].max(axis=1) == 0).any():
            os.kill(os.getpid(), signal.SIGKILL)  # a model that dies on one input, as a GPU fault would
        time.sleep(_LATENCY_S)
        outputs = {meta.name: meta for meta in self.get_outputs()}
        names = output_names or list(outputs)
        return [_answer(outputs[name], len(tensor)) for name in names]

    onnxruntime.InferenceSession.run = run
'''


def simulated_device_env(
    folder: Path, latency_ms: float, crash_on_black: bool = False, matte: Path | None = None
) -> dict:
    """Environment for a worker whose model runs take `latency_ms` of wall time and no CPU (and,
    with `crash_on_black`, whose model process dies on an all-black image). The model's answer is a
    hard-edged rectangle, or with `matte` that grey PNG (for benchmarks: mattes.model_matte_path())."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "CVUNET_SIM_DEVICE_MS": str(latency_ms)}
    if crash_on_black:
        env["CVUNET_SIM_CRASH_ON_BLACK"] = "1"
    if matte is not None:
        env["CVUNET_SIM_MATTE"] = str(matte)
    return env


def build_isnet_shaped_model(path: Path, size: int = 1024) -> Path:
    """input (1, 3, size, size) float -> output (1, 1, size, size): the channel mean, batch fixed to 1.
    Named like ISNet's graph, so the isnet manifest (NCHW, fixed size) is chosen for it."""
    import onnx
    from onnx import TensorProto, helper

    path.parent.mkdir(parents=True, exist_ok=True)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["output"], keepdims=1)],
        "isnet_shaped",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, size, size])],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def build_brightness_model(folder: Path) -> Path:
    """An ISNet-shaped model (NCHW 256 x 256, alpha out, its manifest beside it) whose matte is a steep
    sigmoid of the brightness: soft edges wherever the photo's light changes, a real photo's edges for
    the edge steps, at a fraction of a real model's cost."""
    import json

    import onnx
    from onnx import TensorProto, helper

    folder.mkdir(parents=True, exist_ok=True)
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["grey", "steep"], ["scaled"]),
        helper.make_node("Sigmoid", ["scaled"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "brightness",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 256, 256])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 256, 256])],
        [helper.make_tensor("steep", TensorProto.FLOAT, [], [12.0])],
    )
    path = folder / "brightness.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), path)
    manifest = {
        "name": "brightness",
        "input": {"name": "input", "layout": "NCHW", "size": [256, 256], "mean": [128.0] * 3, "std": [256.0] * 3},
        "output": {"name": "output", "kind": "alpha", "scale": 1.0},
    }
    (folder / "brightness.json").write_text(json.dumps(manifest))
    return path
