"""gentwin.reference's GatherBlockQuantized and MoE kernels against onnxruntime's CPU kernels.

Each test runs one node in onnxruntime and in onnx's ReferenceEvaluator with CONTRIB_OPS (the harness of
tests/test_contrib_ops.py), over random shapes and every attribute value the official builder writes.
"""

import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from gentwin.reference.ops import CONTRIB_OPS
from tests.test_contrib_ops import make_model, pack_bits, run_both

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
        dict(width=96, block_size=64, bits=4, zero_points=True),  # an odd block count: the last zero point byte half used
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
