"""The rounding twin of a QDQ int4 graph (gentwin.conformance.twins.fuse_qdq_matmuls): DequantizeLinear of a
blockwise 4-bit weight feeding a MatMul, written as the MatMulNBits at accuracy_level 4 that onnxruntime fuses
it into. Checked on onnxruntime itself: the fused graph gives the original graph's outputs bit for bit."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from gentwin.conformance.twins import fusable_qdq_matmuls, fuse_qdq_matmuls, rounds_activations_to_int8

RNG = np.random.default_rng(3)


def qdq_matmul(weight_type: int, zero_points: bool, K: int, N: int, block_size: int) -> onnx.ModelProto:
    """Y = A @ DequantizeLinear(W) for a random 4-bit W [K, N] quantized in blocks of BLOCK_SIZE along K."""
    low, high = (-8, 8) if weight_type == TensorProto.INT4 else (0, 16)
    blocks = -(-K // block_size)
    tensors = [helper.make_tensor("W", weight_type, [K, N], RNG.integers(low, high, (K, N)).ravel().tolist()),
               onnx.numpy_helper.from_array(RNG.uniform(0.01, 0.1, (blocks, N)).astype(np.float32), "scales")]
    inputs = ["W", "scales"]
    if zero_points:
        tensors.append(helper.make_tensor("zero_points", weight_type, [blocks, N],
                                          RNG.integers(low, high, (blocks, N)).ravel().tolist()))
        inputs.append("zero_points")
    nodes = [helper.make_node("DequantizeLinear", inputs, ["W_dequantized"], axis=0, block_size=block_size),
             helper.make_node("MatMul", ["A", "W_dequantized"], ["Y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [3, K])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [3, N])], tensors)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def run(model: onnx.ModelProto, a: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"A": a})[0]


@pytest.mark.parametrize("weight_type", [TensorProto.INT4, TensorProto.UINT4], ids=["int4", "uint4"])
@pytest.mark.parametrize("zero_points", [False, True], ids=["implicit-zero-point", "zero-points"])
@pytest.mark.parametrize("K, block_size", [(64, 32), (48, 16)], ids=["even-blocks", "odd-blocks"])
def test_the_fused_graph_gives_onnxruntimes_outputs_bit_for_bit(weight_type, zero_points, K, block_size):
    model = qdq_matmul(weight_type, zero_points, K, 24, block_size)
    assert rounds_activations_to_int8(model.graph) and len(list(fusable_qdq_matmuls(model.graph))) == 1
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    fuse_qdq_matmuls(fused.graph)
    assert [node.op_type for node in fused.graph.node] == ["MatMulNBits"]
    a = RNG.normal(size=(3, K)).astype(np.float32)
    np.testing.assert_array_equal(run(fused, a), run(model, a))


def test_a_dequantized_weight_read_by_another_op_is_not_fused():
    model = qdq_matmul(TensorProto.INT4, False, 64, 24, 32)
    model.graph.node.append(helper.make_node("Identity", ["W_dequantized"], ["W_copy"]))
    model.graph.output.append(helper.make_tensor_value_info("W_copy", TensorProto.FLOAT, [64, 24]))
    assert not rounds_activations_to_int8(model.graph)
