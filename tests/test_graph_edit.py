"""The edits made to a model at load: unread outputs dropped, an fp16 graph computed in float32 on the CPU.

The model here is shaped like ISNet's fp16 export: float32 in, a Cast to fp16, fp16 weights and
constants, side outputs beside the one read, Casts back to float32 before each output.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cvunet_matting.config import load_settings
from cvunet_matting.errors import ModelError
from cvunet_matting.model.graph_edit import edited_model
from cvunet_matting.model.manifest import builtin
from cvunet_matting.model.providers import CPU, CUDA, TENSORRT
from cvunet_matting.model.session import MattingSession, computes_in_float32

SIZE = 32
NUDGE = 0.0004  # an fp16 constant, for the constants' conversion
MANIFEST = replace(builtin("isnet-fp16"), size=(SIZE, SIZE))


def half(name: str, values: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(values.astype(np.float16), name)


def build_fp16_model(path: Path, io: int = TensorProto.FLOAT) -> Path:
    """input -> fp16 -> conv+relu -> (+ NUDGE) -> concat -> a 1x1 conv to `output`; `side`: another 1x1 conv.
    `io`: the type of the graph's input and outputs (float32 as ISNet's export, or fp16 throughout)."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("Conv", ["x16", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("Constant", [], ["nudge"], value=half("nudge_value", np.array(NUDGE))),
        helper.make_node("Add", ["relu", "nudge"], ["nudged"]),
        helper.make_node("Concat", ["nudged", "nudged"], ["joined"], axis=1),
        helper.make_node("Conv", ["joined", "w_out"], ["out16"]),
        helper.make_node("Cast", ["out16"], ["output"], to=io),
        helper.make_node("Conv", ["relu", "w_side"], ["side16"]),
        helper.make_node("Cast", ["side16"], ["side"], to=io),
    ]
    initializers = [
        half("w", rng.normal(0, 0.3, (4, 3, 3, 3))),
        half("b", np.ones(4)),  # a zero input gives relu = 1 everywhere, for the NUDGE
        half("w_out", np.full((1, 8, 1, 1), 0.125)),
        half("w_side", rng.normal(0, 0.3, (1, 4, 1, 1))),
    ]
    shape = [1, 1, SIZE, SIZE]
    graph = helper.make_graph(
        nodes,
        "isnet_fp16_shaped",
        [helper.make_tensor_value_info("input", io, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(n, io, shape) for n in ("output", "side")],
        initializers,
        value_info=[helper.make_tensor_value_info("relu", TensorProto.FLOAT16, [1, 4, SIZE, SIZE])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def fp16_model(tmp_path) -> Path:
    return build_fp16_model(tmp_path / "fp16.onnx")


def run(model: bytes | str, tensor: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": tensor})[0]


def fp16_tensors(graph: onnx.GraphProto) -> list[str]:
    """Where fp16 is still named: initializers, constants, cast targets, declared types."""
    half = TensorProto.FLOAT16
    found = [t.name for t in graph.initializer if t.data_type == half]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.t.data_type == half or (node.op_type == "Cast" and attribute.i == half):
                found.append(f"{node.op_type}:{node.output[0]}")
    types = [*graph.input, *graph.output, *graph.value_info]
    return found + [v.name for v in types if v.type.tensor_type.elem_type == half]


def test_unread_outputs_go_with_what_only_they_need(fp16_model):
    edited = edited_model(fp16_model, MANIFEST, False, False)
    graph = onnx.load_from_string(edited.model).graph
    assert [o.name for o in graph.output] == ["output"]
    assert {t.name for t in graph.initializer} == {"w", "b", "w_out"}
    assert "side16" not in {out for node in graph.node for out in node.output}
    tensor = np.random.default_rng(1).normal(0, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    assert np.array_equal(run(edited.model, tensor), run(str(fp16_model), tensor))


def test_without_float32_the_graph_stays_fp16_for_a_gpu(fp16_model):
    graph = onnx.load_from_string(edited_model(fp16_model, MANIFEST, False, False).model).graph
    assert {"w", "b", "w_out", "Cast:x16", "Constant:nudge", "relu"} <= set(fp16_tensors(graph))


def test_float32_leaves_no_fp16_and_gives_the_fp16_answer_within_its_precision(fp16_model):
    edited = edited_model(fp16_model, MANIFEST, False, False, float32=True)
    graph = onnx.load_from_string(edited.model).graph
    onnx.checker.check_model(onnx.load_from_string(edited.model))
    assert fp16_tensors(graph) == []
    tensor = np.random.default_rng(2).normal(0, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    wide, narrow = run(edited.model, tensor), run(str(fp16_model), tensor)
    np.testing.assert_allclose(wide, narrow, atol=4e-3, rtol=2e-3)  # fp16's precision


def test_the_float32_edit_keeps_the_uint8_prefix_and_the_batch_edit(fp16_model):
    edited = edited_model(fp16_model, MANIFEST, True, True, float32=True)
    assert edited.batched and edited.input_name == "input_uint8" and edited.output_name == "output_uint8"
    graph = onnx.load_from_string(edited.model).graph
    assert fp16_tensors(graph) == []
    pixels = np.random.default_rng(4).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)
    session = ort.InferenceSession(edited.model, providers=["CPUExecutionProvider"])
    (alpha,) = session.run([edited.output_name], {edited.input_name: pixels})
    assert alpha.dtype == np.uint8 and alpha.shape == (2, 1, SIZE, SIZE)


def session(path: Path, **env: str) -> MattingSession:
    return MattingSession(path, MANIFEST, load_settings({"CVUNET_DEVICE": "cpu", **env}))


@pytest.mark.parametrize(("env", "float32"), [({}, True), ({"CVUNET_CPU_FLOAT32": "0"}, False)])
def test_a_cpu_session_computes_an_fp16_model_in_float32_unless_told(tmp_path, env, float32):
    """A graph with fp16 inputs shows it: widened, it takes the float32 the host makes (model_input)."""
    matting = session(build_fp16_model(tmp_path / "fp16-io.onnx", io=TensorProto.FLOAT16), **env)
    assert [o.name for o in matting.session.get_outputs()] == ["output"]
    assert matting.session.get_inputs()[0].type == ("tensor(float)" if float32 else "tensor(float16)")
    if float32:  # and it gives what the float32-IO export of the same weights gives
        photo = np.random.default_rng(6).integers(0, 256, (40, 50, 3), dtype=np.uint8)
        export = session(build_fp16_model(tmp_path / "float-io.onnx"), **env)
        alpha = matting.predict_alpha(photo)
        assert 0 < alpha.mean() < 255 and np.abs(alpha.astype(int) - export.predict_alpha(photo)).max() <= 1


@pytest.mark.parametrize(
    ("wanted", "provider", "expected"),
    [(True, CPU, True), (False, CPU, False), (True, CUDA, False), (True, TENSORRT, False)],
)
def test_only_the_cpu_provider_is_given_float32(wanted, provider, expected):
    assert computes_in_float32(wanted, provider) == expected


def test_a_file_that_is_no_model_is_a_model_error(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="is not an ONNX model"):
        edited_model(broken, MANIFEST, False, False)


@pytest.mark.parametrize(("field", "kind"), [("input_name", "input"), ("output_name", "output")])
def test_a_manifest_that_names_another_tensor_says_which_there_are(fp16_model, field, kind):
    manifest = replace(MANIFEST, **{field: "image"})
    with pytest.raises(ModelError, match=f"no {kind} named 'image'") as raised:
        edited_model(fp16_model, manifest, False, False)
    assert ("output, side" if kind == "output" else "input") in str(raised.value)
