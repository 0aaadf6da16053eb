"""gentwin.reference's GatherBlockQuantized and MoE kernels against onnxruntime's CPU kernels.

Each test runs one node in onnxruntime and in onnx's ReferenceEvaluator with CONTRIB_OPS (the harness of
tests/test_contrib_ops.py), over random shapes and every attribute value the official builder writes.
"""

import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper
from onnx.reference import ReferenceEvaluator

from gentwin.reference.ops import CONTRIB_OPS
from tests.test_contrib_ops import make_model, pack_bits, run_both, run_model

# --- GatherBlockQuantized ----------------------------------------------------------------------
# One float32 product per value, then a cast to the scales' dtype: the outputs must be bit-identical.


def quantized_table(rng, rows, width, bits, block_size, zero_points, scale_dtype):
    """A uint8 table as the builder reshapes the LM head: [rows, width * bits / 8] packed values, scales
    [rows, blocks] and, if asked, packed zero points [rows, ceil(blocks * bits / 8)]."""
    blocks = -(-width // block_size)
    data = pack_bits(rng.integers(0, 2**bits, (rows, width)), bits)
    scales = rng.uniform(-0.1, 0.1, (rows, blocks)).astype(scale_dtype)  # the builder's scales are signed
    zero = pack_bits(rng.integers(0, 2**bits, (rows, blocks)), bits) if zero_points else None
    return data, scales, zero


def run_gather_block_quantized(data, indices, scales, zero_points, **attributes):
    inputs = [("data", data), ("indices", indices), ("scales", scales), ("zero_points", zero_points)]
    # int4 tensors reach onnxruntime only as initializers
    return run_both("GatherBlockQuantized", inputs, initializers=("data", "zero_points"), **attributes)


def assert_identical(expected, actual):
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("block_size", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("zero_points", [False, True], ids=["symmetric", "zero_points"])
@pytest.mark.parametrize("scale_dtype", [np.float32, np.float16])
def test_gather_block_quantized_as_the_builder_writes_it(bits, block_size, zero_points, scale_dtype):
    """uint8 data [vocab, hidden * bits / 8] gathered along axis 0 by [batch, sequence] token ids, some
    repeated, some negative (counted from the end)."""
    rng = np.random.default_rng(block_size + bits)
    vocab, width = 37, 2 * block_size
    data, scales, zero = quantized_table(rng, vocab, width, bits, block_size, zero_points, scale_dtype)
    token_ids = rng.integers(-vocab, vocab, (2, 5)).astype(np.int64)
    token_ids[1, 4] = token_ids[0, 0]
    expected, actual = run_gather_block_quantized(
        data, token_ids, scales, zero, bits=bits, block_size=block_size, gather_axis=0, quantize_axis=1
    )
    assert expected[0].shape == (2, 5, width)
    assert_identical(expected, actual)


@pytest.mark.parametrize(
    "case",
    [
        dict(width=48, block_size=32, bits=4),  # the row ends in a partial block
        dict(width=40, block_size=16, bits=8, zero_points=True),
        dict(width=96, block_size=64, bits=4, zero_points=True),  # odd block count: a half-used zero point byte
        dict(width=64, block_size=16, bits=2, zero_points=True),
        dict(width=64, block_size=32, bits=4, index_dtype=np.int32),
        dict(width=64, block_size=32, bits=4, rank=3),  # [experts, rows, packed] gathered along 0, quantized along -1
    ],
    ids=["partial_block", "bits8_partial", "odd_blocks", "bits2", "int32_indices", "rank3"],
)
def test_gather_block_quantized_uint8_variants(case):
    rng = np.random.default_rng(20)
    bits, block_size = case["bits"], case["block_size"]
    data, scales, zero = quantized_table(rng, 24, case["width"], bits, block_size, case.get("zero_points"), np.float32)
    if case.get("rank") == 3:
        data, scales = data.reshape(4, 6, -1), scales.reshape(4, 6, -1)
    indices = rng.integers(0, data.shape[0], 7).astype(case.get("index_dtype", np.int64))
    expected, actual = run_gather_block_quantized(
        data, indices, scales, zero, bits=bits, block_size=block_size, gather_axis=0, quantize_axis=-1
    )
    assert_identical(expected, actual)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bits=st.sampled_from([2, 4, 8]), block_size=st.sampled_from([16, 32, 64, 128, 256]), blocks=st.integers(1, 3),
    rows=st.integers(1, 40), indices_shape=st.lists(st.integers(1, 4), max_size=2), zero_points=st.booleans(),
    scale_dtype=st.sampled_from([np.float32, np.float16]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_gather_block_quantized_random_shapes(bits, block_size, blocks, rows, indices_shape, zero_points, scale_dtype,
                                              seed):  # fmt: skip
    """Any table height, any number of (whole) blocks a row, scalar to rank-2 indices."""
    rng = np.random.default_rng(seed)
    data, scales, zero = quantized_table(rng, rows, blocks * block_size, bits, block_size, zero_points, scale_dtype)
    indices = rng.integers(-rows, rows, indices_shape).astype(np.int64)
    expected, actual = run_gather_block_quantized(
        data, indices, scales, zero, bits=bits, block_size=block_size, gather_axis=0, quantize_axis=1
    )
    assert_identical(expected, actual)


def test_tied_int4_embedding_as_the_builder_writes_it():
    """The tied embedding and LM head of an int4 build whose hidden size (40) is not a whole number of blocks
    (32): MatMulNBits reads lm_head.MatMul.weight_Q4 [vocab, blocks, 16]; a Reshape to [vocab, 32] feeds
    GatherBlockQuantized, whose padded rows a Slice cuts back to the hidden size."""
    rng = np.random.default_rng(24)
    vocab, hidden, block_size = 50, 40, 32
    blocks = -(-hidden // block_size)
    constants = {
        "lm_head.MatMul.weight_Q4": pack_bits(rng.integers(0, 16, (vocab, blocks, block_size)), 4),
        "lm_head.MatMul.weight_scales": rng.uniform(-0.1, 0.1, (vocab, blocks)).astype(np.float32),
        "flat_shape": np.array([vocab, blocks * block_size // 2], np.int64),
        "starts": np.array([0], np.int64), "ends": np.array([hidden], np.int64), "axes": np.array([-1], np.int64),
    }  # fmt: skip
    nodes = [
        helper.make_node("Reshape", ["lm_head.MatMul.weight_Q4", "flat_shape"], ["table"]),
        helper.make_node(
            "GatherBlockQuantized", ["table", "input_ids", "lm_head.MatMul.weight_scales"], ["padded"],
            domain="com.microsoft", bits=4, block_size=block_size, gather_axis=0, quantize_axis=1,
        ),
        helper.make_node("Slice", ["padded", "starts", "ends", "axes"], ["embeddings"]),
        helper.make_node(
            "MatMulNBits", ["embeddings", "lm_head.MatMul.weight_Q4", "lm_head.MatMul.weight_scales"], ["logits"],
            domain="com.microsoft", K=hidden, N=vocab, bits=4, block_size=block_size, accuracy_level=0,
        ),
    ]  # fmt: skip
    feeds = {"input_ids": rng.integers(0, vocab, (2, 6)).astype(np.int64)}
    expected, actual = run_model(make_model(nodes, feeds, ["embeddings", "logits"], constants), feeds)
    assert_identical(expected[:1], actual[:1])
    np.testing.assert_allclose(actual[1], expected[1], rtol=1e-5, atol=1e-5)


def nibble_table(rng, shape, quantize_axis, block_size, dtype, zero_points):
    """int4 / uint4 data of `shape` quantized along quantize_axis: data, scales and zero points (or None)."""
    low, high = (-8, 8) if dtype == ml_dtypes.int4 else (0, 16)
    blocks_shape = list(shape)
    blocks_shape[quantize_axis] = -(-shape[quantize_axis] // block_size)
    data = rng.integers(low, high, shape).astype(dtype)
    scales = rng.uniform(-0.1, 0.1, blocks_shape).astype(np.float16)
    zero = rng.integers(low, high, blocks_shape).astype(dtype) if zero_points else None
    return data, scales, zero


@pytest.mark.parametrize("dtype", [ml_dtypes.int4, ml_dtypes.uint4], ids=["int4", "uint4"])
@pytest.mark.parametrize("zero_points", [False, True], ids=["no_zero_points", "zero_points"])
@pytest.mark.parametrize(
    "gather_axis, quantize_axis", [(0, 1), (0, 2), (1, 0), (2, 1), (1, 1), (-1, 0), (0, -1)]
)
def test_gather_block_quantized_nibble_types_any_axes(dtype, zero_points, gather_axis, quantize_axis):
    """int4 / uint4 data may gather and quantize along any axes, the same one included (then an index
    picks its block's scale); their zero points default to 0, not 8."""
    rng = np.random.default_rng(21)
    data, scales, zero = nibble_table(rng, (6, 40, 5), quantize_axis, 16, dtype, zero_points)
    dim = data.shape[gather_axis]
    indices = rng.integers(-dim, dim, (2, 3)).astype(np.int64)
    expected, actual = run_gather_block_quantized(
        data, indices, scales, zero, block_size=16, gather_axis=gather_axis, quantize_axis=quantize_axis
    )
    assert_identical(expected, actual)


def reference_gather(data, zero_points=None, **attributes):
    """The reference kernel alone on one node, data and zero points stored in the model -> a function
    of (indices, scales) giving the output."""
    constants = {"data": data} | ({} if zero_points is None else {"zero_points": zero_points})
    inputs = ["data", "indices", "scales"] + (["zero_points"] if zero_points is not None else [])
    node = helper.make_node("GatherBlockQuantized", inputs, ["y"], domain="com.microsoft", **attributes)
    shapes = {"indices": np.zeros(0, np.int64), "scales": np.zeros(0, np.float32)}  # declared types only
    evaluator = ReferenceEvaluator(make_model([node], shapes, ["y"], constants), new_ops=CONTRIB_OPS)
    return lambda indices, scales: evaluator.run(None, {"indices": indices, "scales": scales})[0]


def test_gather_block_quantized_dequantizes_only_the_gathered_rows():
    """A 50k-token int4 table (3.2 MB packed, 25.6 MB dequantized): gathering 4 tokens must not allocate
    anywhere near a dequantized table, nor even a copy of the packed one."""
    rng = np.random.default_rng(22)
    data, scales, _ = quantized_table(rng, 50_000, 128, 4, 32, False, np.float32)
    gather = reference_gather(data, bits=4, block_size=32, gather_axis=0, quantize_axis=1)
    tracemalloc.start()
    try:
        output = gather(np.array([[3, 49_999, 3, 17]], np.int64), scales)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert output.shape == (1, 4, 128)
    assert peak < data.nbytes / 2


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(indices=np.array([24], np.int64)), IndexError, r"index 24 is outside \[-24, 24\)"),
        (dict(indices=np.array([-25], np.int64)), IndexError, "index -25 is outside"),
        (dict(scales=np.ones((24, 3), np.float32)), ValueError, "scales of shape"),
        (dict(zero_points=np.zeros((24, 2), np.uint8)), ValueError, "zero_points of shape"),
        (dict(bits=3), ValueError, "bits=3"),
        (dict(block_size=24), ValueError, "block_size=24 must be a power of 2"),
        (dict(gather_axis=1), ValueError, "uint8 data needs gather_axis 0"),
        (dict(scales=np.ones((24, 2), np.float64)), NotImplementedError, "scales dtype='float64'"),
    ],
    ids=["index_too_large", "index_too_small", "scales_shape", "zero_points_shape", "bits", "block_size", "axis",
         "scales_dtype"],
)  # fmt: skip
def test_gather_block_quantized_rejects_bad_input(change, error, message):
    """onnxruntime writes zeros for an out-of-range token id; the reference raises, naming it."""
    data, scales, _ = quantized_table(np.random.default_rng(23), 24, 64, 4, 32, False, np.float32)
    arguments = dict(indices=np.array([1], np.int64), scales=scales, bits=4, block_size=32, gather_axis=0) | change
    indices, scales = arguments.pop("indices"), arguments.pop("scales")
    with pytest.raises(error, match=message):
        reference_gather(data, **arguments, quantize_axis=1)(indices, scales)


# --- MoE and QMoE ------------------------------------------------------------------------------
# Float32 GEMMs whose sums onnxruntime orders its own way (MLAS's kernels differ between CPUs): equal
# within float32 rounding, relative to the output's largest value. Measured here: at most 4.6e-7; each
# mistake tried on purpose (no clamp, the other tie rule, MoE's routing for QMoE, float32 instead of int8
# activations) is off by more than 1e-2.

MOE_RTOL = 4e-6
GPT_OSS = dict(  # the attributes the builder writes for gpt-oss (GPTOSSModel and gpt-oss's swiglu_limit)
    activation_type="swiglu", swiglu_fusion=1, activation_alpha=1.702, activation_beta=1.0, swiglu_limit=7.0,
    normalize_routing_weights=1, use_sparse_mixer=0,
)


def assert_close_to_float32(expected, actual, rtol=MOE_RTOL):
    (want,), (got,) = expected, actual
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max())


def moe_inputs(rng, tokens_shape, hidden, inter, experts, swiglu, biases, weight_scale=0.3):
    """input [*tokens_shape, hidden] and router logits [tokens, experts] (both fed), then the float expert weights."""
    fc1_rows = 2 * inter if swiglu else inter
    tokens = int(np.prod(tokens_shape))
    return [
        ("input", rng.standard_normal((*tokens_shape, hidden)).astype(np.float32)),
        ("router_probs", rng.standard_normal((tokens, experts)).astype(np.float32)),
        ("fc1_experts_weights", (weight_scale * rng.standard_normal((experts, fc1_rows, hidden))).astype(np.float32)),
        ("fc1_experts_bias", rng.standard_normal((experts, fc1_rows)).astype(np.float32) if biases else None),
        ("fc2_experts_weights", (weight_scale * rng.standard_normal((experts, hidden, inter))).astype(np.float32)),
        ("fc2_experts_bias", rng.standard_normal((experts, hidden)).astype(np.float32) if biases else None),
    ]


MOE_WEIGHTS = ("fc1_experts_weights", "fc1_experts_bias", "fc2_experts_weights", "fc2_experts_bias")


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("biases", [True, False], ids=["biases", "no_biases"])
@pytest.mark.parametrize("tokens_shape", [(2, 5), (1, 1)], ids=["prompt", "decode"])
def test_moe_as_the_builder_writes_it_for_gpt_oss(k, biases, tokens_shape):
    """[batch, sequence, hidden] input, router logits [batch * sequence, experts]; weights large enough
    that swiglu_limit clamps both halves of fc1's output."""
    rng = np.random.default_rng(30 + k)
    inputs = moe_inputs(rng, tokens_shape, 32, 24, 8, swiglu=True, biases=biases, weight_scale=2.0)
    fc1_outputs = np.einsum("...h,erh->e...r", inputs[0][1], inputs[2][1])  # [experts, ..., 2 * inter]
    assert (fc1_outputs > 7).any() and (fc1_outputs < -7).any()
    expected, actual = run_both("MoE", inputs, initializers=MOE_WEIGHTS, k=k, **GPT_OSS)
    assert_close_to_float32(expected, actual)


@pytest.mark.parametrize("tokens_shape", [(2, 5), (1, 1)], ids=["prompt", "decode"])
def test_moe_in_float16_as_the_builder_writes_it_for_gpt_oss(tokens_shape):
    """The builder's fp16 gpt-oss: every input float16. onnxruntime multiplies in half precision (MLAS's
    half GEMM), the reference in float32, rounding the output back: equal within float16's rounding of the
    expert layers' outputs, relative to the output's largest value (on this project's CPU, bit for bit)."""
    rng = np.random.default_rng(37)
    inputs = [(name, None if array is None else array.astype(np.float16))
              for name, array in moe_inputs(rng, tokens_shape, 32, 24, 8, swiglu=True, biases=True)]
    (want,), (got,) = run_both("MoE", inputs, initializers=MOE_WEIGHTS, k=2, **GPT_OSS)
    assert got.dtype == want.dtype == np.float16 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=4e-3 * np.abs(want.astype(np.float32)).max())


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "identity", "swiglu"])
@pytest.mark.parametrize("normalize", [0, 1])
def test_moe_activations_and_routing(activation, normalize):
    """Without normalize_routing_weights an expert's weight is its softmax probability over all experts."""
    rng = np.random.default_rng(31)
    swiglu = activation == "swiglu"
    inputs = moe_inputs(rng, (6,), 16, 8, 6, swiglu=swiglu, biases=True)
    attributes = dict(activation_type=activation, k=3, normalize_routing_weights=normalize)
    if swiglu:  # onnxruntime's defaults: alpha 1, beta 0, no limit; its CPU kernel wants interleaving
        attributes["swiglu_fusion"] = 1
    assert_close_to_float32(*run_both("MoE", inputs, initializers=MOE_WEIGHTS, **attributes))


def test_moe_router_ties_rank_the_higher_expert_first():
    """Equal router logits: onnxruntime's partial_sort on (probability, expert) with std::greater takes the
    highest-numbered experts. A rule picking the lowest would mix other experts' outputs."""
    rng = np.random.default_rng(32)
    inputs = moe_inputs(rng, (3,), 16, 8, 5, swiglu=True, biases=True)
    inputs[1] = ("router_probs", np.array([[0, 0, 0, 0, 0], [1, 2, 2, 1, 0], [3, 3, 3, 1, 3]], np.float32))
    expected, actual = run_both("MoE", inputs, initializers=MOE_WEIGHTS, k=2, **GPT_OSS)
    assert_close_to_float32(expected, actual)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tokens=st.integers(1, 9), hidden=st.integers(1, 24), inter=st.integers(1, 24), experts=st.integers(1, 9),
    data=st.data(), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_moe_random_shapes(tokens, hidden, inter, experts, data, seed):
    k = data.draw(st.integers(1, experts), label="k")
    biases = data.draw(st.booleans(), label="biases")
    normalize = data.draw(st.sampled_from([0, 1]), label="normalize_routing_weights")
    inputs = moe_inputs(np.random.default_rng(seed), (tokens,), hidden, inter, experts, swiglu=True, biases=biases)
    attributes = dict(GPT_OSS, k=k, normalize_routing_weights=normalize)
    assert_close_to_float32(*run_both("MoE", inputs, initializers=MOE_WEIGHTS, **attributes))


def qmoe_inputs(rng, tokens, hidden, inter, experts, bits, block_size, zero_points=False, exact=False):
    """QMoE's inputs as the builder writes them for the CPU: MatMulNBits-packed experts [experts, rows,
    in * bits / 8], scales [experts, rows, in / block_size] ([experts, rows] without a block size), biases.

    exact: small integer inputs and power-of-two scales, so that every float32 sum before an int8 rounding
    is exact whatever its order, and the rounding lands identically on any CPU."""
    per_byte = 8 // bits

    def layer(rows, inputs):
        blocks = 1 if block_size is None else inputs // block_size
        shape = (experts, rows, blocks) if block_size else (experts, rows)
        scales = (2.0 ** rng.integers(-7, -4, shape) if exact else rng.uniform(-0.05, 0.05, shape)).astype(np.float32)
        zero = pack_bits(rng.integers(0, 2**bits, (experts, rows, blocks)), bits) if zero_points else None
        return pack_bits(rng.integers(0, 2**bits, (experts, rows, inputs)), bits), scales, zero

    def values(*shape):
        return (rng.integers(-4, 5, shape) * (1 if exact else 0.25) / per_byte).astype(np.float32)

    fc1, fc1_scales, fc1_zero = layer(2 * inter, hidden)
    fc2, fc2_scales, fc2_zero = layer(hidden, inter)
    return [
        ("input", values(1, tokens, hidden) if exact else rng.standard_normal((1, tokens, hidden)).astype(np.float32)),
        ("router_probs", rng.standard_normal((tokens, experts)).astype(np.float32)),
        ("fc1_experts_weights", fc1), ("fc1_scales", fc1_scales), ("fc1_experts_bias", values(experts, 2 * inter)),
        ("fc2_experts_weights", fc2), ("fc2_scales", fc2_scales), ("fc2_experts_bias", values(experts, hidden)),
        ("fc3_experts_weights", None), ("fc3_scales", None), ("fc3_experts_bias", None),
        ("fc1_zero_points", fc1_zero), ("fc2_zero_points", fc2_zero),
    ]  # fmt: skip


QMOE_CONSTANTS = (
    "fc1_experts_weights", "fc1_scales", "fc1_experts_bias", "fc2_experts_weights", "fc2_scales", "fc2_experts_bias",
    "fc1_zero_points", "fc2_zero_points",
)  # fmt: skip


def run_qmoe(inputs, bits, block_size, k=4, **attributes):
    if block_size is not None:
        attributes["block_size"] = block_size
    return run_both(
        "QMoE", inputs, initializers=QMOE_CONSTANTS, expert_weight_bits=bits, k=k, **(GPT_OSS | attributes)
    )


@pytest.mark.parametrize("block_size", [32, 64, 128, None], ids=["block32", "block64", "block128", "per_row"])
@pytest.mark.parametrize("k", [2, 4])
def test_qmoe_int4_as_the_builder_writes_it_for_gpt_oss(block_size, k):
    """4-bit experts, symmetric (no zero points): dequantized, then multiplied in float32."""
    inputs = qmoe_inputs(np.random.default_rng(33 + k), 5, 128, 128, 8, 4, block_size)
    assert_close_to_float32(*run_qmoe(inputs, 4, block_size, k=k))


@pytest.mark.parametrize(
    "bits, block_size, accuracy_level, zero_points",
    [(8, 32, 0, False), (8, 64, 0, True), (8, 32, 1, False), (4, 32, 4, False), (4, 64, 4, True), (8, None, 0, False)],
    ids=["int8_block32", "int8_block64_zero_points", "int8_fp32_level", "int4_level4", "int4_level4_zero_points",
         "int8_per_row"],
)  # fmt: skip
def test_qmoe_int8_activations(bits, block_size, accuracy_level, zero_points):
    """Block-wise 8-bit experts, and 4-bit ones at accuracy_level 4, take their inputs rounded to int8 per
    block (MatMulNBits's accuracy_level 4); per-row 8-bit experts are multiplied in float32."""
    inputs = qmoe_inputs(np.random.default_rng(34), 5, 128, 64, 6, bits, block_size, zero_points, exact=True)
    expected, actual = run_qmoe(inputs, bits, block_size, accuracy_level=accuracy_level, normalize_routing_weights=0)
    assert_close_to_float32(expected, actual)


def test_qmoe_int8_activations_are_not_float32():
    """The accuracy_level 4 case above could not tell int8 activations from float32 ones if they agreed."""
    inputs = qmoe_inputs(np.random.default_rng(34), 5, 128, 64, 6, 4, 32, exact=True)
    (int8,), _ = run_qmoe(inputs, 4, 32, accuracy_level=4)
    (float32,), _ = run_qmoe(inputs, 4, 32, accuracy_level=0)
    assert np.abs(int8 - float32).max() > 100 * MOE_RTOL * np.abs(float32).max()


def run_reference_moe(inputs, op_type="MoE", **attributes):
    """The reference kernel alone on one node; every input fed."""
    names = [name if array is not None else "" for name, array in inputs]
    feeds = {name: array for name, array in inputs if array is not None}
    node = helper.make_node(op_type, names, ["y"], domain="com.microsoft", **attributes)
    return ReferenceEvaluator(make_model([node], feeds, ["y"]), new_ops=CONTRIB_OPS).run(None, feeds)[0]


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(swiglu_fusion=0), NotImplementedError, "swiglu_fusion=0"),
        (dict(swiglu_fusion=2), NotImplementedError, "swiglu_fusion=2"),
        (dict(use_sparse_mixer=1), NotImplementedError, "use_sparse_mixer=1"),
        (dict(activation_type="gelu_new"), NotImplementedError, "activation_type='gelu_new'"),
        (dict(k=9), ValueError, r"router_probs of shape \(4, 8\) must be \[tokens, experts >= k=9\]"),
        (dict(k=0), ValueError, "k=0 must be at least 1"),
        (dict(fc3_experts_weights=np.ones((8, 24, 32), np.float32)), NotImplementedError, "fc3"),
        (dict(fc2_experts_bias=np.ones((8, 24), np.float32)), ValueError, r"fc2_experts_bias has shape \(8, 24\)"),
        (dict(router_probs=np.ones((5, 8), np.float32)), ValueError, "4 tokens but router_probs has 5 rows"),
    ],
    ids=["fusion0", "fusion2", "sparse_mixer", "activation", "k_above_experts", "k_zero", "fc3", "bias_shape",
         "router_rows"],
)  # fmt: skip
def test_moe_rejects_what_onnxruntime_cannot_compute(change, error, message):
    inputs = dict(moe_inputs(np.random.default_rng(35), (4,), 32, 24, 8, swiglu=True, biases=True))
    inputs["fc3_experts_weights"] = None
    attributes = dict(GPT_OSS, k=2)
    for name in list(change):
        (inputs if name in inputs else attributes)[name] = change.pop(name)
    with pytest.raises(error, match=message):
        run_reference_moe(list(inputs.items()), **attributes)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(expert_weight_bits=2), NotImplementedError, "expert_weight_bits=2"),
        (dict(block_size=48), ValueError, "block_size=48 must be a power of 2"),
        (dict(block_size=256), ValueError, r"dividing hidden \(128\) and inter \(64\)"),
        (dict(fc1_scales=np.ones((6, 128, 2), np.float32)), ValueError, r"fc1_scales has shape \(6, 128, 2\)"),
    ],
    ids=["bits", "block_size", "block_size_too_large", "scales_shape"],
)  # fmt: skip
def test_qmoe_rejects_bad_quantization(change, error, message):
    inputs = dict(qmoe_inputs(np.random.default_rng(36), 3, 128, 64, 6, 4, 32))
    attributes = dict(GPT_OSS, k=2, expert_weight_bits=4, block_size=32)
    for name in list(change):
        (inputs if name in inputs else attributes)[name] = change.pop(name)
    with pytest.raises(error, match=message):
        run_reference_moe(list(inputs.items()), "QMoE", **attributes)
