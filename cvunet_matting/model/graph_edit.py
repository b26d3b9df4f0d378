"""Edits made to a model's graph at load time, with onnx's helper API, never saved over the file.

- A batch dimension fixed to 1 becomes dynamic, so several images can run as one batch.
- A small prefix takes uint8 pixels (NHWC for a fixed-size model, HWC for an any-size one) and does
  the cast, the manifest's normalisation and the transpose inside the graph: on a GPU that work
  moves off the host's cores, and a quarter of the bytes crosses to the device (and between
  processes). The prefix casts to the model's own input type, so an fp16 graph is fed fp16 on the
  device without the host converting anything.
- The edge steps as a suffix (edge_suffix.py): the full-size matte and the cut-out's colours come back.
- Outputs nobody reads are dropped with the nodes that only they need: ISNet's five side outputs are
  each upscaled to full size and put through a sigmoid, ~3% of a CPU inference.
- For the CPU provider, an fp16 graph is computed in float32: onnxruntime's CPU provider has no fp16
  convolutions on x86, so it converts every fp16 activation to float32 and back around each layer
  (Cast, plus the NCHWc reorders those casts break up). ISNet fp16 on 2 threads, interleaved in one
  process: 0.94x the time (0.91x with the side outputs dropped), the alpha within one level of 255.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvunet_matting.errors import ModelError

from .edge_suffix import EdgeMath, append_edge_suffix
from .manifest import Manifest, guess_template

UINT8_SUFFIX = "_uint8"


@dataclass(frozen=True)
class Edited:
    model: bytes  # the serialized graph, for InferenceSession
    manifest: Manifest
    input_name: str  # what to feed
    output_name: str  # what to read
    batched: bool  # several images may run as one batch


def edited_model(
    path: Path,
    manifest: Manifest | None,
    dynamic_batch: bool,
    uint8_io: bool,
    edges: EdgeMath | None = None,
    *,
    float32: bool = False,
) -> Edited:
    """The graph at `path` with the requested edits, its unread outputs always dropped. `uint8_io`:
    uint8 pixels in and, for an alpha output, the alpha as uint8 out (scaled, rounded and clipped on
    the device). `edges`: the edge suffix after that alpha (a uint8 model with an alpha output only).
    `float32`: fp16 tensors and casts become float32 (for the CPU provider)."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf's DecodeError and its kin: the file is no ONNX model
        raise ModelError(f"{path} is not an ONNX model ({type(error).__name__}: {error})") from None
    graph = model.graph
    if manifest is None:
        manifest = guess_template([i.name for i in graph.input])
    original = _named(graph.input, manifest.input_name, path, "input")
    _named(graph.output, manifest.output_name, path, "output")
    keep_only_output(graph, manifest.output_name)
    if float32:
        compute_in_float32(graph)
    batched = manifest.layout == "NCHW" and dynamic_batch
    if batched:
        _make_batch_dynamic(graph)
    input_name, output_name = manifest.input_name, manifest.output_name
    if uint8_io:
        _prepend_uint8_prefix(graph, original, manifest)
        input_name += UINT8_SUFFIX
        if manifest.output_kind == "alpha":
            _append_uint8_alpha(graph, manifest)
            output_name += UINT8_SUFFIX
            if edges is not None:
                append_edge_suffix(graph, output_name, edges)
    return Edited(model.SerializeToString(), manifest, input_name, output_name, batched)


def _named(values, name: str, path: Path, kind: str):
    """The graph's input or output called `name`, or a ModelError that names the ones it has."""
    for value in values:
        if value.name == name:
            return value
    have = ", ".join(v.name for v in values)
    raise ModelError(f"{path} has no {kind} named {name!r} (its {kind}s: {have}): check the model's manifest")


def _has_subgraphs(graph) -> bool:
    from onnx import AttributeProto

    kinds = {AttributeProto.GRAPH, AttributeProto.GRAPHS}
    return any(a.type in kinds for n in graph.node for a in n.attribute)


def keep_only_output(graph, name: str) -> None:
    """Drop every graph output but `name`, then the nodes and initializers nothing left needs.
    onnxruntime computes every graph output whichever ones a run asks for. A graph with control
    flow (whose subgraphs read outer values by name) is left whole."""
    if len(graph.output) < 2 or name not in {o.name for o in graph.output} or _has_subgraphs(graph):
        return
    producer = {value: index for index, node in enumerate(graph.node) for value in node.output}
    alive: set[int] = set()
    needed, pending = {name}, [name]
    while pending:
        index = producer.get(pending.pop())
        if index is None or index in alive:
            continue
        alive.add(index)
        for value in graph.node[index].input:
            if value and value not in needed:
                needed.add(value)
                pending.append(value)
    nodes = [node for index, node in enumerate(graph.node) if index in alive]
    initializers = [t for t in graph.initializer if t.name in needed]
    outputs = [o for o in graph.output if o.name == name]
    for field, kept in ((graph.node, nodes), (graph.initializer, initializers), (graph.output, outputs)):
        del field[:]
        field.extend(kept)


def compute_in_float32(graph) -> None:
    """Every fp16 tensor of the graph becomes float32: initializers, constants, casts to fp16 and
    the declared types of inputs, outputs and intermediate values. Left alone: a graph with control
    flow (subgraphs would need the same walk)."""
    from onnx import AttributeProto, TensorProto, numpy_helper

    half, full = TensorProto.FLOAT16, TensorProto.FLOAT
    if _has_subgraphs(graph):
        return

    def widen(tensor) -> None:
        if tensor.data_type == half:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))

    for tensor in graph.initializer:
        widen(tensor)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                widen(attribute.t)
            elif attribute.type == AttributeProto.INT and attribute.name in {"to", "dtype"} and attribute.i == half:
                attribute.i = full  # Cast's target; the dtype of EyeLike, RandomNormal and the like
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == half:
            value.type.tensor_type.elem_type = full


def _make_batch_dynamic(graph) -> None:
    """Dimension 0 of every graph input and output becomes a named dimension ("batch"); the shapes
    recorded for intermediate values (fixed to batch 1 by the exporter) are dropped, so onnxruntime
    infers them again."""
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    del graph.value_info[:]


def _prepend_uint8_prefix(graph, original, manifest: Manifest) -> None:
    """Replace the float input by a uint8 one: Cast, (x - mean) / std, Transpose to NCHW, Cast."""
    from onnx import TensorProto, helper, numpy_helper

    name = original.name
    elem_type = original.type.tensor_type.elem_type
    nchw = manifest.layout == "NCHW"
    dims: list[str | int] = [d.dim_param or d.dim_value for d in original.type.tensor_type.shape.dim]
    shape: list[str | int] = [dims[0], dims[2], dims[3], dims[1]] if nchw and len(dims) == 4 else ["h", "w", 3]
    new_input = helper.make_tensor_value_info(name + UINT8_SUFFIX, TensorProto.UINT8, shape)
    mean = numpy_helper.from_array(np.asarray(manifest.mean, np.float32), name + "_mean")
    std = numpy_helper.from_array(np.asarray(manifest.std, np.float32), name + "_std")
    final = name if elem_type == TensorProto.FLOAT else name + "_f32"
    nodes = [
        helper.make_node("Cast", [new_input.name], [name + "_cast"], to=TensorProto.FLOAT),
        helper.make_node("Sub", [name + "_cast", mean.name], [name + "_centred"]),
        helper.make_node("Div", [name + "_centred", std.name], [name + "_scaled" if nchw else final]),
    ]
    if nchw:
        nodes.append(helper.make_node("Transpose", [name + "_scaled"], [final], perm=[0, 3, 1, 2]))
    if final != name:  # an fp16 (or other) graph: the device converts, not the host
        nodes.append(helper.make_node("Cast", [final], [name], to=elem_type))
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + body)
    graph.initializer.extend([mean, std])
    inputs = [new_input if i.name == name else i for i in graph.input]
    del graph.input[:]
    graph.input.extend(inputs)


def _append_uint8_alpha(graph, manifest: Manifest) -> None:
    """A second output: the alpha as uint8, computed as the host did (x * 255 / scale + 0.5, clipped,
    truncated), so a quarter of the bytes comes back and the host does no arithmetic on it."""
    from onnx import TensorProto, helper, numpy_helper

    name = manifest.output_name
    (original,) = [o for o in graph.output if o.name == name]
    dims: list[str | int] = [d.dim_param or d.dim_value for d in original.type.tensor_type.shape.dim]
    consts = {
        "_gain": np.float32(255.0 / manifest.output_scale),
        "_half": np.float32(0.5),
        "_lo": np.float32(0.0),
        "_hi": np.float32(255.0),
    }
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), name + k) for k, v in consts.items())
    graph.node.extend(
        [
            helper.make_node("Cast", [name], [name + "_f32"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [name + "_f32", name + "_gain"], [name + "_scaled"]),
            helper.make_node("Add", [name + "_scaled", name + "_half"], [name + "_rounded"]),
            helper.make_node("Clip", [name + "_rounded", name + "_lo", name + "_hi"], [name + "_clipped"]),
            helper.make_node("Cast", [name + "_clipped"], [name + UINT8_SUFFIX], to=TensorProto.UINT8),
        ]
    )
    graph.output.append(helper.make_tensor_value_info(name + UINT8_SUFFIX, TensorProto.UINT8, dims))
