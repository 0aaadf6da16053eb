"""A model's rounding twin: the same folder on the other side of its rounding, whose logits tell how far the
rounding moves the model's (model_facts: D, the rounding's share of the bound).

- accuracy_level 4 (MatMulNBits, MoE: the input rounded to int8 blockwise) set to 0: the same weights,
  dequantized, multiplied in float;
- a half-precision graph computed in float32: its weights, casts, constants and declared types widened;
- a QDQ int4 graph (DequantizeLinear of a blockwise int4 weight feeding a MatMul, as the builder writes with
  use_qdq=1), which ONNX defines in float but which onnxruntime fuses into a MatMulNBits at its session option
  session.qdq_matmulnbits_accuracy_level, 4 unless set: the twin is that fusion, written out, so that the
  oracle, computing the graph as ONNX defines it, can measure what the peer's rounding does.

A twin's other files are copies (onnx and onnxruntime refuse external data behind a symbolic link, and onnx
refuses a file with more than one hard link, the original's too), in a temporary directory that lasts as long
as the process.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

from gentwin.config import load_config

INT8_ACCURACY_LEVEL = 4
UNROUNDED_ACCURACY_LEVEL = 0  # unset: the dequantized weights multiplied in float


def rounds_activations_to_int8(graph: onnx.GraphProto) -> bool:
    """Whether onnxruntime rounds some activation of GRAPH to int8: a node at accuracy_level 4 (MatMulNBits,
    MoE), or a QDQ int4 MatMul that it fuses into one."""
    return any(rounding_nodes(graph)) or any(fusable_qdq_matmuls(graph))


def rounding_nodes(graph: onnx.GraphProto):
    """The nodes of GRAPH and its subgraphs whose accuracy_level 4 rounds their input to int8."""
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name == "accuracy_level" and attribute.i == INT8_ACCURACY_LEVEL:
                yield node, attribute
            for subgraph in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                yield from rounding_nodes(subgraph)


HALF_TYPES = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def computes_in_half_precision(graph: onnx.GraphProto) -> bool:
    """Whether GRAPH takes or gives float16 / bfloat16 values or holds such weights."""
    values = [*graph.input, *graph.output]
    return (any(value.type.tensor_type.elem_type in HALF_TYPES for value in values)
            or any(tensor.data_type in HALF_TYPES for tensor in graph.initializer))


def widen_to_float32(graph: onnx.GraphProto) -> None:
    """GRAPH (weights loaded) and its subgraphs computing in float32 where they computed in float16 / bfloat16:
    weights and constants widened exactly, casts to half precision made casts to float32, the declared types of
    inputs, outputs and intermediate values changed alike."""
    for tensor in graph.initializer:
        _widen_tensor(tensor)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type in HALF_TYPES:
            value.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i in HALF_TYPES:
                attribute.i = onnx.TensorProto.FLOAT
            if attribute.HasField("t"):
                _widen_tensor(attribute.t)
            for subgraph in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                widen_to_float32(subgraph)


def _widen_tensor(tensor: onnx.TensorProto) -> None:
    if tensor.data_type in HALF_TYPES:
        widened = onnx.numpy_helper.to_array(tensor).astype(np.float32)
        tensor.CopyFrom(onnx.numpy_helper.from_array(widened, tensor.name))


FOUR_BIT_TYPES = {onnx.TensorProto.INT4: np.int8(8), onnx.TensorProto.UINT4: np.int8(0)}  # type: offset to uint4


def fusable_qdq_matmuls(graph: onnx.GraphProto):
    """The DequantizeLinear nodes of GRAPH that onnxruntime fuses with the MatMuls they feed into MatMulNBits
    (its DQ-MatMul fusion's conditions): a constant 2-D 4-bit weight [K, N] blockwise along K (axis 0, a block
    size of 16 or more, a power of 2), constant scales and zero points, read only as MatMul's B."""
    constants = {tensor.name: tensor for tensor in graph.initializer}
    readers = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, position))
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        block_size, weight = attributes.get("block_size", 0), constants.get(node.input[0])
        if (attributes.get("axis") == 0
                and block_size >= 16 and block_size & (block_size - 1) == 0
                and weight is not None and weight.data_type in FOUR_BIT_TYPES and len(weight.dims) == 2
                and all(name in constants for name in node.input[1:] if name)
                and all(reader.op_type == "MatMul" and position == 1
                        for reader, position in readers.get(node.output[0], []))):
            yield node, block_size, [reader for reader, _ in readers.get(node.output[0], [])]


def fuse_qdq_matmuls(graph: onnx.GraphProto) -> None:
    """Each fusable DequantizeLinear -> MatMul of GRAPH (weights loaded) written as the MatMulNBits that
    onnxruntime runs instead, at accuracy_level 4 (session.qdq_matmulnbits_accuracy_level's default)."""
    from gentwin.fixtures.quantize import packed

    constants = {tensor.name: tensor for tensor in graph.initializer}
    for dequantize, block_size, matmuls in list(fusable_qdq_matmuls(graph)):
        weight = constants[dequantize.input[0]]
        offset = FOUR_BIT_TYPES[weight.data_type]
        levels = onnx.numpy_helper.to_array(weight).astype(np.int8) + offset                  # [K, N] in [0, 15]
        scales = onnx.numpy_helper.to_array(constants[dequantize.input[1]])                    # [K / block, N]
        K, N = levels.shape
        blocks = -(-K // block_size)
        padded = np.zeros((blocks * block_size, N), np.uint8)
        padded[:K] = levels                                                                     # [K', N]
        zero_points = None
        if len(dequantize.input) > 2 and dequantize.input[2]:
            stored = onnx.numpy_helper.to_array(constants[dequantize.input[2]])                # [K / block, N]
            zero_points = (stored.astype(np.int8) + offset).astype(np.uint8).T                 # [N, K / block]
        elif offset == 0:
            zero_points = np.zeros((N, blocks), np.uint8)  # uint4 without zero points: 0, not MatMulNBits' 8
        quantized = packed(padded.T.reshape(N, blocks, block_size), scales.T, zero_points)
        prefix = dequantize.output[0]
        tensors = [(f"{prefix}.B", quantized.packed), (f"{prefix}.scales", quantized.scales.astype(scales.dtype))]
        if quantized.zero_points is not None:
            tensors.append((f"{prefix}.zero_points", quantized.zero_points))
        graph.initializer.extend(onnx.numpy_helper.from_array(np.ascontiguousarray(v), n) for n, v in tensors)
        for matmul in matmuls:
            fused = onnx.helper.make_node("MatMulNBits", [matmul.input[0], *(name for name, _ in tensors)],
                                          list(matmul.output), name=f"{matmul.name}.fused", domain="com.microsoft",
                                          K=K, N=N, bits=4, block_size=block_size,
                                          accuracy_level=INT8_ACCURACY_LEVEL)
            matmul.CopyFrom(fused)
        graph.node.remove(dequantize)


@functools.lru_cache(maxsize=None)
def rounding_twin(folder) -> Path:
    """FOLDER on the other side of its rounding (see the module docstring): accuracy_level 4 set to 0, a
    half-precision graph computed in float32, QDQ int4 MatMuls fused as onnxruntime fuses them. Where weights
    are rewritten the twin's model has an external data file of its own."""
    config = load_config(str(folder))
    skeleton = onnx.load(config.model_path, load_external_data=False).graph
    half = computes_in_half_precision(skeleton)
    rewrites_weights = half or any(fusable_qdq_matmuls(skeleton))
    proto = onnx.load(config.model_path, load_external_data=rewrites_weights)
    for _, attribute in rounding_nodes(proto.graph):
        attribute.i = UNROUNDED_ACCURACY_LEVEL
    if half:
        widen_to_float32(proto.graph)
    fuse_qdq_matmuls(proto.graph)
    twin = Path(_twins_directory.name) / f"{len(os.listdir(_twins_directory.name))}-{Path(folder).name}"
    twin.mkdir()
    for entry in Path(folder).resolve().iterdir():
        if entry.name != config.decoder.filename:
            _share(entry, twin / entry.name)
    if rewrites_weights:
        weights = f"{config.decoder.filename}.twin.data"
        (twin / weights).unlink(missing_ok=True)  # a copy of a file of FOLDER's that happens to bear the name
        onnx.save(proto, str(twin / config.decoder.filename), save_as_external_data=True, location=weights)
    else:
        onnx.save(proto, str(twin / config.decoder.filename))
    return twin


def _share(source: Path, target: Path) -> None:
    """TARGET holding what SOURCE holds: a copy of a file (onnx and onnxruntime refuse external data behind a
    symbolic link, and onnx refuses a file with more than one hard link, the original's too), a symbolic link
    to a folder."""
    if source.is_dir():
        target.symlink_to(source)
    else:
        shutil.copyfile(source, target)


_twins_directory = tempfile.TemporaryDirectory(prefix="gentwin-twins-")
