"""gentwin.reference's graph runner: the same outputs as onnx's ReferenceEvaluator running the same kernels, with
the work that does not depend on the feeds done once at load, and numpy's BLAS held to a thread count."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from gentwin.reference import blas_threads
from gentwin.reference.graph_runner import FOLDED_BYTES, GraphRunner
from gentwin.reference.ops import CONTRIB_OPS

VOCAB, HIDDEN = 40, 8


def tied_embedding_model(extra_nodes=(), extra_initializers=(), outputs=("logits",)) -> onnx.ModelProto:
    """A tied embedding as gentwin's GGUF import writes it: the LM head's weight [H, V] is the table, read
    through a Transpose by a Gather of the token ids; the logits are the embeddings times that weight."""
    weight = np.random.default_rng(0).standard_normal((HIDDEN, VOCAB)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["lm_head"], ["table"], perm=[1, 0]),
        helper.make_node("Gather", ["table", "input_ids"], ["embeddings"]),
        helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.float32(2))),
        helper.make_node("Mul", ["embeddings", "two"], ["doubled"]),
        helper.make_node("MatMul", ["doubled", "lm_head"], ["logits"]),
        *extra_nodes,
    ]
    graph = helper.make_graph(
        nodes, "tied",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(weight, "lm_head"), *extra_initializers],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def both(model: onnx.ModelProto, feeds: dict):
    """(ReferenceEvaluator's outputs, GraphRunner's outputs, the runner)."""
    expected = ReferenceEvaluator(model, new_ops=CONTRIB_OPS).run(None, feeds)
    runner = GraphRunner(model, {})
    return expected, runner.run(feeds), runner


def test_outputs_are_the_evaluators_bit_for_bit():
    feeds = {"input_ids": np.array([[3, 0, 39, 7]], np.int64)}
    expected, actual, _ = both(tied_embedding_model(), feeds)
    np.testing.assert_array_equal(actual[0], expected[0])


def test_the_transposed_table_is_folded_at_load_into_a_view_of_the_weight():
    runner = GraphRunner(tied_embedding_model(), {})
    assert [step.kernel.op_type for step in runner.steps] == ["Gather", "Mul", "MatMul"]
    table, weight = runner.constants["table"], runner.constants["lm_head"]
    assert table.shape == (VOCAB, HIDDEN) and np.shares_memory(table, weight)  # no copy of the table


def test_a_constant_node_whose_output_would_be_large_keeps_running_at_every_run():
    """A quantized weight widened by DequantizeLinear stays quantized in memory: the node runs at each run."""
    rows = FOLDED_BYTES // (4 * HIDDEN) + 1  # float32 output just over FOLDED_BYTES
    quantized = np.random.default_rng(1).integers(-100, 100, (rows, HIDDEN)).astype(np.int8)
    widen = helper.make_node("DequantizeLinear", ["quantized", "scale"], ["widened"])
    initializers = [numpy_helper.from_array(quantized, "quantized"), numpy_helper.from_array(np.float32(0.5), "scale")]
    model = tied_embedding_model([widen], initializers, outputs=("logits", "widened"))
    expected, actual, runner = both(model, {"input_ids": np.array([[1, 2]], np.int64)})
    assert "DequantizeLinear" in [step.kernel.op_type for step in runner.steps]
    assert "widened" not in runner.constants
    np.testing.assert_array_equal(actual[1], expected[1])


def test_a_node_reading_an_initializer_that_a_feed_may_override_is_not_folded():
    """An initializer named like a graph input is only that input's default value."""
    model = tied_embedding_model()
    model.graph.input.append(helper.make_tensor_value_info("lm_head", TensorProto.FLOAT, [HIDDEN, VOCAB]))
    fed = np.ones((HIDDEN, VOCAB), np.float32)
    feeds = {"input_ids": np.array([[1, 2]], np.int64), "lm_head": fed}
    expected, actual, runner = both(model, feeds)
    assert "Transpose" in [step.kernel.op_type for step in runner.steps]
    np.testing.assert_array_equal(actual[0], expected[0])
    np.testing.assert_array_equal(actual[0], np.full((1, 2, VOCAB), 2.0 * HIDDEN, np.float32))


def test_random_nodes_are_never_folded():
    noise = helper.make_node("RandomUniform", [], ["noise"], shape=[4], dtype=TensorProto.FLOAT)
    runner = GraphRunner(tied_embedding_model([noise], outputs=("logits", "noise")), {})
    assert "RandomUniform" in [step.kernel.op_type for step in runner.steps]


def test_each_value_is_dropped_after_its_last_reader_and_outputs_are_kept():
    runner = GraphRunner(tied_embedding_model(), {})
    last_reads = {step.kernel.op_type: step.last_reads for step in runner.steps}
    assert last_reads == {"Gather": ("input_ids",), "Mul": ("embeddings",), "MatMul": ("doubled",)}


@pytest.mark.parametrize(("axis", "indices"), [(0, [[1, -1], [0, 2]]), (1, [2, -3]), (-1, 1), (0, -2)],
                         ids=["2d_negative", "axis1", "last_axis_scalar", "scalar_negative"])
def test_gather_matches_onnxs_kernel(axis, indices):
    data = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    node = helper.make_node("Gather", ["data", "indices"], ["out"], axis=axis)
    graph = helper.make_graph(
        [node], "gather",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, None)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(data, "data")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    feeds = {"indices": np.array(indices, np.int64)}
    expected = ReferenceEvaluator(model).run(None, feeds)[0]  # onnx's own Gather
    actual = GraphRunner(model, {}).run(feeds)[0]
    assert isinstance(actual, np.ndarray) and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


def test_blas_threads_are_limited_during_a_run_and_given_back_after():
    threads = blas_threads.BlasThreads()
    if threads._functions is None:
        pytest.skip("numpy's BLAS here is not OpenBLAS")
    set_threads, get_threads = threads._functions
    original = get_threads()
    set_threads(2)
    with threads.limited_to(1):
        assert get_threads() == 1
        with threads.limited_to(1):  # a second run alongside
            assert get_threads() == 1
        assert get_threads() == 1  # the first is still running
    assert get_threads() == 2
    set_threads(original)


def test_the_peers_thread_count_is_the_configured_one_else_half_the_cpus_up_to_16(monkeypatch):
    from gentwin import threads

    assert threads.peer_intra_op_threads({"intra_op_num_threads": 3}) == 3
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 8)
    assert threads.peer_intra_op_threads({}) == 4
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 64)
    assert threads.peer_intra_op_threads() == 16
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 1)
    assert threads.peer_intra_op_threads({"intra_op_num_threads": 0}) == 1
