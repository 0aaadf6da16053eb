"""gentwin.reference.ops against onnxruntime's CPU kernels.

Each test builds a one-node ONNX model, runs it in onnxruntime and in onnx's ReferenceEvaluator with
CONTRIB_OPS, and compares every output. The last tests run whole decoder models from ../shared/models.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from gentwin.reference.ops import CONTRIB_OPS
from tests.conftest import shared_model

# float32 kernels that differ only in summation order agree to a few ulps
RTOL, ATOL = 1e-5, 1e-5
FLOAT32_MIN = -3.4028234663852886e38  # the mask_filter_value GPT-2 exports use


def make_model(nodes, inputs, outputs, initializers=()):
    """A model over `inputs` (name -> array, fed at run time) and `initializers` (name -> array)."""
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for name, a in inputs.items()
        ],
        [helper.make_empty_tensor_value_info(name) for name in outputs],
        initializer=[numpy_helper.from_array(a, name) for name, a in dict(initializers).items()],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)  # onnxruntime reads IR <= 13


def run_both(op_type, inputs, outputs=1, domain="com.microsoft", initializers=(), **attributes):
    """Run one node on onnxruntime's CPU and on the reference -> (expected, actual) output lists.

    inputs: [(name, array or None)], None for an omitted optional input; outputs: a count or a list
    of names where "" omits an optional output; initializers: the input names to store as constants.
    """
    names = [f"y{i}" for i in range(outputs)] if isinstance(outputs, int) else outputs
    input_names = [name if array is not None else "" for name, array in inputs]
    while input_names[-1] == "":
        input_names.pop()
    node = helper.make_node(op_type, input_names, names, domain=domain, **attributes)
    feeds = {name: a for name, a in inputs if a is not None and name not in initializers}
    constants = {name: a for name, a in inputs if a is not None and name in initializers}
    model = make_model([node], feeds, [name for name in names if name], constants)
    return run_model(model, feeds)


def run_model(model, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warns when outputs outgrow the shapes it inferred
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    actual = ReferenceEvaluator(model, new_ops=CONTRIB_OPS).run(None, feeds)
    return expected, actual


def assert_outputs_match(expected, actual, rtol=RTOL, atol=ATOL):
    """Same number of outputs, each with onnxruntime's dtype and shape and values within tolerance."""
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def random(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def rotary_caches(rng, rotary_dim, max_positions=32):
    angles = rng.uniform(0, 2 * np.pi, (max_positions, rotary_dim // 2))
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


# --- GroupQueryAttention -----------------------------------------------------------------------

NUM_HEADS, KV_HEADS, HEAD_SIZE = 4, 2, 16
MAX_LENGTH = 12  # shared-buffer cache length

# stage -> (valid tokens per row after the step, new tokens per row S, past length of a growing cache)
GQA_STAGES = {
    "prompt": ([3, 5], 5, 0),  # batched first prompt, row 0 right-padded
    "decode": ([4, 6], 1, 5),  # one token per row; row 0's past holds 3 valid tokens of 5
    "continuation": ([8], 3, 5),  # chat-mode append of 3 tokens to 5 cached ones (batch 1 only)
}


def gqa_inputs(rng, stage, layout, packed=True):
    valid_lengths, new_length, growing_length = GQA_STAGES[stage]
    batch = len(valid_lengths)
    past_length = MAX_LENGTH if layout == "shared" else growing_length
    qkv = random(rng, batch, new_length, (NUM_HEADS + 2 * KV_HEADS) * HEAD_SIZE)
    if packed:
        query, key, value = qkv, None, None
    else:
        query, key, value = np.split(qkv, [NUM_HEADS * HEAD_SIZE, (NUM_HEADS + KV_HEADS) * HEAD_SIZE], axis=-1)
    cos, sin = rotary_caches(rng, HEAD_SIZE)
    return [
        ("query", np.ascontiguousarray(query)),
        ("key", None if key is None else np.ascontiguousarray(key)),
        ("value", None if value is None else np.ascontiguousarray(value)),
        # slots past a row's valid length hold garbage (e.g. a rewound sequence): GQA must ignore them
        ("past_key", random(rng, batch, KV_HEADS, past_length, HEAD_SIZE)),
        ("past_value", random(rng, batch, KV_HEADS, past_length, HEAD_SIZE)),
        ("seqlens_k", np.array(valid_lengths, np.int32) - 1),
        ("total_sequence_length", np.array(max(valid_lengths), np.int32)),
        ("cos_cache", cos),
        ("sin_cache", sin),
    ]


def run_gqa(inputs, **attributes):
    return run_both("GroupQueryAttention", inputs, 3, num_heads=NUM_HEADS, kv_num_heads=KV_HEADS, **attributes)


@pytest.mark.parametrize("stage", list(GQA_STAGES))
@pytest.mark.parametrize("layout", ["shared", "growing"])
@pytest.mark.parametrize("packed", [True, False], ids=["packed", "separate"])
@pytest.mark.parametrize("rotary", ["none", "half", "interleaved"])
def test_group_query_attention(stage, layout, packed, rotary):
    inputs = gqa_inputs(np.random.default_rng(0), stage, layout, packed)
    if rotary == "none":
        inputs = inputs[:-2]
    expected, actual = run_gqa(inputs, do_rotary=int(rotary != "none"), rotary_interleaved=int(rotary == "interleaved"))
    assert_outputs_match(expected, actual)


@pytest.mark.parametrize("stage", ["prompt", "decode"])
@pytest.mark.parametrize(
    "attributes",
    [{"scale": 0.3}, {"softcap": 2.0}, {"local_window_size": 2}, {"smooth_softmax": 1}, {"rotary_interleaved": 1}],
    ids=lambda a: next(iter(a)),
)
def test_group_query_attention_attributes(stage, attributes):
    inputs = gqa_inputs(np.random.default_rng(1), stage, "shared")
    assert_outputs_match(*run_gqa(inputs, do_rotary=1, **attributes))


@pytest.mark.parametrize("interleaved", [0, 1])
def test_group_query_attention_partial_rotary(interleaved):
    """A cos/sin cache narrower than head_size / 2 rotates only the first 2 * width channels
    (head_size 32 with a 16-channel rotary: onnxruntime wants the cache width a multiple of 8)."""
    rng = np.random.default_rng(3)
    query = random(rng, 1, 3, (NUM_HEADS + 2 * KV_HEADS) * 32)
    past = random(rng, 1, KV_HEADS, MAX_LENGTH, 32)
    cos, sin = rotary_caches(rng, 16)
    inputs = [("query", query), ("key", None), ("value", None), ("past_key", past), ("past_value", past)]
    inputs += [("seqlens_k", np.array([7], np.int32)), ("total", np.array(8, np.int32)), ("cos", cos), ("sin", sin)]
    assert_outputs_match(*run_gqa(inputs, do_rotary=1, rotary_interleaved=interleaved))


@pytest.mark.parametrize("stage", ["prompt", "decode"])
def test_group_query_attention_bias_and_head_sink(stage):
    rng = np.random.default_rng(4)
    inputs = gqa_inputs(rng, stage, "shared")
    valid_lengths, new_length, _ = GQA_STAGES[stage]
    attention_bias = random(rng, len(valid_lengths), 1, new_length, max(valid_lengths))
    head_sink = random(rng, NUM_HEADS)
    inputs += [("position_ids", None), ("attention_bias", attention_bias), ("head_sink", head_sink)]
    assert_outputs_match(*run_gqa(inputs, do_rotary=1))


def test_group_query_attention_rejects_unsupported_attributes():
    feeds = {name: a for name, a in gqa_inputs(np.random.default_rng(0), "decode", "shared") if a is not None}
    node = helper.make_node(
        "GroupQueryAttention", ["query", "", "", *list(feeds)[1:]], ["out", "k", "v"], domain="com.microsoft",
        num_heads=NUM_HEADS, kv_num_heads=KV_HEADS, causal=0,
    )  # fmt: skip
    model = make_model([node], feeds, ["out"])
    with pytest.raises(NotImplementedError, match="GroupQueryAttention: causal=0"):
        ReferenceEvaluator(model, new_ops=CONTRIB_OPS).run(None, feeds)


# --- RotaryEmbedding ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["BSH", "BNSD"])
@pytest.mark.parametrize("positions", ["offset", "per_token"])
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rotary_dim", [0, 8])
def test_rotary_embedding(layout, positions, interleaved, rotary_dim):
    rng = np.random.default_rng(5)
    batch, length, heads, head_size = 2, 5, 3, 16
    shape = (batch, length, heads * head_size) if layout == "BSH" else (batch, heads, length, head_size)
    x = random(rng, *shape)
    position_ids = np.array([7]) if positions == "offset" else rng.integers(0, 27, (batch, length))
    cos, sin = rotary_caches(rng, rotary_dim or head_size)
    attributes = {"interleaved": interleaved}
    if rotary_dim:
        attributes.update(rotary_embedding_dim=rotary_dim, num_heads=heads)
    inputs = [("x", x), ("position_ids", position_ids.astype(np.int64)), ("cos", cos), ("sin", sin)]
    assert_outputs_match(*run_both("RotaryEmbedding", inputs, **attributes))


def test_rotary_embedding_rejects_a_cache_wider_than_the_rotary_dimension():
    rng = np.random.default_rng(5)
    cos, sin = rotary_caches(rng, 16)
    inputs = [("x", random(rng, 1, 2, 32)), ("position_ids", np.array([0], np.int64)), ("cos", cos), ("sin", sin)]
    with pytest.raises(NotImplementedError, match="RotaryEmbedding: cos_cache width"):
        run_both("RotaryEmbedding", inputs, rotary_embedding_dim=8, num_heads=2)


def test_rotary_embedding_refuses_three_rows_of_positions_as_onnxruntime_does():
    """[3, B, S] positions (a multimodal rotary's, which the builder hands RotaryEmbedding for a Qwen3.5 config
    without mrope_section) are refused by onnxruntime's kernel, and by the reference in its words."""
    rng = np.random.default_rng(5)
    cos, sin = rotary_caches(rng, 16)
    feeds = {"x": random(rng, 1, 2, 32), "position_ids": np.zeros((3, 1, 2), np.int64), "cos": cos, "sin": sin}
    node = helper.make_node("RotaryEmbedding", list(feeds), ["y"], domain="com.microsoft")
    model = make_model([node], feeds, ["y"])
    message = "Input 'position_ids' is expected to have 0, 1, or 2 dimensions, got 3"
    with pytest.raises(Exception, match=message):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    with pytest.raises(ValueError, match=f"RotaryEmbedding: {message}"):
        ReferenceEvaluator(model, new_ops=CONTRIB_OPS).run(None, feeds)


# --- MRotaryEmbedding --------------------------------------------------------------------------


@pytest.mark.parametrize("layout, section", [(0, [2, 3, 3]), (1, [4, 2, 2]), (0, [1, 2, 1]), (1, [2, 1, 1])],
                         ids=["sectioned", "interleaved", "sectioned-partial", "interleaved-partial"])
@pytest.mark.parametrize("interleaved", [0, 1])
def test_mrotary_embedding(layout, section, interleaved):
    """Three distinct position streams (as for an image's tokens), so every column's owner shows; the
    sections cover half the rotary channels, of a whole head of 16 or (partial) of its first 8."""
    rng = np.random.default_rng(6)
    batch, length, heads, head_size, rotary_dim = 2, 5, 3, 16, 2 * sum(section)
    position_ids = rng.integers(0, 27, (3, batch, length)).astype(np.int64)
    cos, sin = rotary_caches(rng, rotary_dim)
    attributes = {"interleaved": interleaved, "mrope_section": section, "mrope_layout": layout, "num_heads": heads}
    if rotary_dim < head_size:
        attributes["rotary_embedding_dim"] = rotary_dim
    inputs = [("x", random(rng, batch, length, heads * head_size)), ("position_ids", position_ids),
              ("cos", cos), ("sin", sin)]
    assert_outputs_match(*run_both("MRotaryEmbedding", inputs, **attributes))


def test_mrotary_embedding_refuses_sections_that_do_not_cover_the_rotary_half():
    rng = np.random.default_rng(6)
    cos, sin = rotary_caches(rng, 16)
    inputs = [("x", random(rng, 1, 2, 32)), ("position_ids", np.zeros((3, 1, 2), np.int64)), ("cos", cos),
              ("sin", sin)]
    with pytest.raises(ValueError, match=r"mrope_section \[1, 1, 1\] adds up to 3, not 8"):
        ReferenceEvaluator(make_model([helper.make_node("MRotaryEmbedding", ["x", "position_ids", "cos", "sin"],
                                                        ["y"], domain="com.microsoft", num_heads=2,
                                                        mrope_section=[1, 1, 1])], dict(inputs), ["y"]),
                           new_ops=CONTRIB_OPS).run(None, dict(inputs))


def test_mrotary_embedding_of_text_is_rotary_embedding():
    """Text positions are equal in the three streams: the rotation is RotaryEmbedding's at that position."""
    rng = np.random.default_rng(7)
    x, positions = random(rng, 1, 4, 32), np.array([[3, 4, 5, 6]], np.int64)
    cos, sin = rotary_caches(rng, 16)
    common = [("cos", cos), ("sin", sin)]
    _, plain = run_both("RotaryEmbedding", [("x", x), ("position_ids", positions), *common], num_heads=2)
    expected, multimodal = run_both("MRotaryEmbedding", [("x", x), ("position_ids", np.stack([positions] * 3)),
                                                         *common], num_heads=2, mrope_section=[2, 3, 3])
    assert_outputs_match(expected, multimodal)
    np.testing.assert_array_equal(multimodal[0], plain[0])


# --- layer norms -------------------------------------------------------------------------------

HIDDEN = 64


@pytest.mark.parametrize("outputs", [1, 2])
@pytest.mark.parametrize("axis", [-1, 1])
def test_simplified_layer_normalization(outputs, axis):
    rng = np.random.default_rng(6)
    x = random(rng, 2, 5, HIDDEN)
    scale = random(rng, *x.shape[axis:])
    inputs = [("x", x), ("scale", scale)]
    expected, actual = run_both("SimplifiedLayerNormalization", inputs, outputs, domain="", axis=axis, epsilon=1e-6)
    assert_outputs_match(expected, actual)


@pytest.mark.parametrize("skip_shape", [(2, 5, HIDDEN), (1, 5, HIDDEN), (5, HIDDEN)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("outputs", [["y"], ["y", "", "", "sum"]], ids=["output", "with_sum"])
def test_skip_simplified_layer_normalization(skip_shape, with_bias, outputs):
    rng = np.random.default_rng(7)
    inputs = [("x", random(rng, 2, 5, HIDDEN)), ("skip", random(rng, *skip_shape)), ("gamma", random(rng, HIDDEN))]
    inputs.append(("bias", random(rng, HIDDEN) if with_bias else None))
    assert_outputs_match(*run_both("SkipSimplifiedLayerNormalization", inputs, outputs, epsilon=1e-6))


@pytest.mark.parametrize("with_beta", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("outputs", [["y"], ["y", "", "", "sum"]], ids=["output", "with_sum"])
def test_skip_layer_normalization(with_beta, with_bias, outputs):
    rng = np.random.default_rng(8)
    inputs = [("x", random(rng, 2, 5, HIDDEN)), ("skip", random(rng, 2, 5, HIDDEN)), ("gamma", random(rng, HIDDEN))]
    inputs.append(("beta", random(rng, HIDDEN) if with_beta else None))
    inputs.append(("bias", random(rng, HIDDEN) if with_bias else None))
    assert_outputs_match(*run_both("SkipLayerNormalization", inputs, outputs, epsilon=1e-5))


def test_omitted_outputs_leave_later_omitted_inputs_empty():
    """ReferenceEvaluator keeps None under the name "" for omitted inputs; the omitted mean/inv_std_var
    outputs of the first node must not overwrite it, or the second node would get a beta."""
    rng = np.random.default_rng(9)
    first = helper.make_node(
        "SkipSimplifiedLayerNormalization", ["x", "skip", "gamma"], ["y", "", "", "sum"], domain="com.microsoft"
    )
    second = helper.make_node(
        "SkipLayerNormalization", ["y", "sum", "gamma", "", "bias"], ["out"], domain="com.microsoft"
    )
    feeds = {"x": random(rng, 2, 3, HIDDEN), "skip": random(rng, 2, 3, HIDDEN)}
    constants = {"gamma": random(rng, HIDDEN), "bias": random(rng, HIDDEN)}
    assert_outputs_match(*run_model(make_model([first, second], feeds, ["out"], constants), feeds))


# --- MatMulNBits -------------------------------------------------------------------------------


def pack_bits(values, bits):
    """Pack the last axis of small unsigned ints `bits` at a time, low bits first."""
    per_byte = 8 // bits
    values = np.pad(values, [(0, 0)] * (values.ndim - 1) + [(0, -values.shape[-1] % per_byte)])
    grouped = values.reshape(*values.shape[:-1], -1, per_byte).astype(np.uint8)
    return np.bitwise_or.reduce(grouped << (bits * np.arange(per_byte, dtype=np.uint8)), axis=-1).astype(np.uint8)


def matmul_nbits_inputs(rng, rows, K, N, block_size, bits=4, zero_points="packed", bias=False):
    block_count = -(-K // block_size)
    quantized = rng.integers(0, 2**bits, (N, block_count, block_size))
    zero = {
        "none": None,
        "packed": pack_bits(rng.integers(0, 2**bits, (N, block_count)), bits),
        "float": rng.uniform(0, 2**bits - 1, (N, block_count)).astype(np.float32),
    }[zero_points]
    return [
        ("A", random(rng, 1, rows, K)),
        ("B", pack_bits(quantized, bits)),
        ("scales", rng.uniform(0.01, 0.1, (N, block_count)).astype(np.float32)),
        ("zero_points", zero),
        ("g_idx", None),
        ("bias", random(rng, N) if bias else None),
    ]


def run_matmul_nbits(inputs, K, N, block_size, bits=4, accuracy_level=0):
    # B, scales and zero points must be initializers: onnxruntime only prepacks constant weights,
    # and without prepacking its accuracy_level 4 quietly computes in float32
    return run_both(
        "MatMulNBits", inputs, initializers=("B", "scales", "zero_points"),
        K=K, N=N, bits=bits, block_size=block_size, accuracy_level=accuracy_level,
    )  # fmt: skip


@pytest.mark.parametrize("accuracy_level", [0, 4])
@pytest.mark.parametrize("block_size", [16, 32, 64, 128])
@pytest.mark.parametrize("zero_points", ["none", "packed"])
@pytest.mark.parametrize("rows", [1, 5, 12])  # 12: more rows than the kernel sums block by block (BLOCK_SUM_ROWS)
def test_matmul_nbits(accuracy_level, block_size, zero_points, rows):
    """Both levels match to float32 summation noise, so the usual tolerance applies. At level 4 that
    holds only because the kernel quantizes A exactly as MLAS does (measured on an AVX-512 VNNI CPU);
    int8 versus float32 arithmetic alone differs by ~5e-2 here (test_matmul_nbits_int8_path_is_not_float32)."""
    K, N = 256, 96
    inputs = matmul_nbits_inputs(np.random.default_rng(10), rows, K, N, block_size, zero_points=zero_points, bias=True)
    assert_outputs_match(*run_matmul_nbits(inputs, K, N, block_size, accuracy_level=accuracy_level))


@pytest.mark.parametrize("accuracy_level", [0, 4])
@pytest.mark.parametrize(
    "case",
    [
        dict(K=200, N=40, block_size=32),  # K not a multiple of the block size
        dict(K=256, N=40, block_size=32, bits=2),
        dict(K=256, N=40, block_size=32, bits=8),
        dict(K=256, N=40, block_size=32, zero_points="float"),  # level 4 falls back to float32 in onnxruntime
    ],
    ids=["ragged_K", "bits2", "bits8", "float_zero_points"],
)
@pytest.mark.parametrize("rows", [3, 12])
def test_matmul_nbits_variants(accuracy_level, case, rows):
    shape = {k: case[k] for k in ("K", "N", "block_size")}
    bits, zero_points = case.get("bits", 4), case.get("zero_points", "packed")
    inputs = matmul_nbits_inputs(np.random.default_rng(11), rows, **shape, bits=bits, zero_points=zero_points)
    expected, actual = run_matmul_nbits(inputs, **shape, bits=bits, accuracy_level=accuracy_level)
    # 8-bit weights make outputs ~16x larger, so the float32 noise is larger in absolute terms
    assert_outputs_match(expected, actual, atol=ATOL * (16 if bits == 8 else 1))


def test_matmul_nbits_int8_path_is_not_float32():
    """The accuracy_level 4 test above could not tell a float32 kernel from an int8 one if the two
    agreed; they do not."""
    K, N, block_size = 256, 96, 32
    inputs = matmul_nbits_inputs(np.random.default_rng(10), 5, K, N, block_size)
    int8 = run_matmul_nbits(inputs, K, N, block_size, accuracy_level=4)[0][0]
    float32 = run_matmul_nbits(inputs, K, N, block_size, accuracy_level=0)[0][0]
    assert np.abs(int8 - float32).max() > 100 * (ATOL + RTOL * np.abs(float32).max())


def test_matmul_nbits_rejects_unsupported_accuracy_level():
    inputs = matmul_nbits_inputs(np.random.default_rng(0), 1, 64, 8, 32)
    with pytest.raises(NotImplementedError, match="MatMulNBits: accuracy_level=2"):
        run_matmul_nbits(inputs, 64, 8, 32, accuracy_level=2)


# --- Attention (GPT-2) and MultiHeadAttention -------------------------------------------------

BATCH, LENGTH, HEADS, SIZE, PAST = 2, 4, 4, 8, 3
RAW_MASK_WITH_PAST = np.array([[1, 1, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]], np.int32)
RAW_MASK = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], np.int32)
ALL_PADDING = np.array([[0, 0, 0, 0], [1, 1, 1, 1]], np.int32)


def attention_inputs(rng, length=LENGTH, past=True, mask=None, attention_bias=None):
    hidden = HEADS * SIZE
    return [
        ("input", random(rng, BATCH, length, hidden)),
        ("weights", random(rng, hidden, 3 * hidden, scale=0.3)),
        ("bias", random(rng, 3 * hidden)),
        ("mask_index", mask),
        ("past", random(rng, 2, BATCH, HEADS, PAST, SIZE) if past else None),
        ("attention_bias", attention_bias),
    ]


@pytest.mark.parametrize("unidirectional", [0, 1])
@pytest.mark.parametrize(
    "case",
    [
        dict(past=False),
        dict(past=False, mask=RAW_MASK),
        dict(past=True, mask=RAW_MASK_WITH_PAST),
        dict(past=True, mask=RAW_MASK_WITH_PAST, mask_filter_value=FLOAT32_MIN),
        dict(past=True, mask=RAW_MASK_WITH_PAST[:, :4].copy(), length=1, mask_filter_value=FLOAT32_MIN),  # decode
        dict(past=True, mask=np.array([5, 6], np.int32)),  # right-padding lengths
        dict(past=True, mask=np.random.default_rng(0).integers(0, 2, (BATCH, LENGTH, LENGTH + PAST), np.int32)),
        dict(past=False, mask=ALL_PADDING),
        dict(past=False, mask=ALL_PADDING, mask_filter_value=FLOAT32_MIN),
        dict(past=True, mask=RAW_MASK_WITH_PAST, scale=0.1),
    ],
    ids=[
        "plain", "mask", "past_mask", "gpt2_filter", "decode", "lengths", "mask_3d", "all_padding", "all_padding_gpt2",
        "scale",
    ],  # fmt: skip
)
def test_attention(unidirectional, case):
    case = dict(case)
    attributes = {k: case.pop(k) for k in ("mask_filter_value", "scale") if k in case}
    inputs = attention_inputs(np.random.default_rng(12), **case)
    expected, actual = run_both("Attention", inputs, 2, num_heads=HEADS, unidirectional=unidirectional, **attributes)
    assert_outputs_match(expected, actual)


def test_attention_bias_input():
    rng = np.random.default_rng(13)
    inputs = attention_inputs(rng, past=False, mask=RAW_MASK, attention_bias=random(rng, 1, HEADS, LENGTH, LENGTH))
    assert_outputs_match(*run_both("Attention", inputs, 2, num_heads=HEADS, unidirectional=1))


def mha_inputs(rng, kv_length=LENGTH, bias=False, mask=None, attention_bias=None, past=False):
    hidden = HEADS * SIZE
    return [
        ("query", random(rng, BATCH, LENGTH, hidden)),
        ("key", random(rng, BATCH, kv_length, hidden)),
        ("value", random(rng, BATCH, kv_length, hidden)),
        ("bias", random(rng, 3 * hidden) if bias else None),
        ("key_padding_mask", mask),
        ("attention_bias", attention_bias),
        ("past_key", random(rng, BATCH, HEADS, PAST, SIZE) if past else None),
        ("past_value", random(rng, BATCH, HEADS, PAST, SIZE) if past else None),
    ]


@pytest.mark.parametrize("unidirectional", [0, 1])
@pytest.mark.parametrize(
    "case",
    [
        dict(),
        dict(bias=True),
        dict(bias=True, past=True),
        dict(past=True, mask=RAW_MASK_WITH_PAST),
        dict(mask=np.array([2, 4], np.int32)),
        dict(mask=ALL_PADDING),
        dict(mask=RAW_MASK, mask_filter_value=-1e9),
        dict(attention_bias="bias", scale=0.2),
    ],
    ids=["plain", "bias", "past", "past_mask", "lengths", "all_padding", "filter", "attention_bias"],
)
def test_multi_head_attention(unidirectional, case):
    case = dict(case)
    attributes = {k: case.pop(k) for k in ("mask_filter_value", "scale") if k in case}
    rng = np.random.default_rng(14)
    if case.get("attention_bias"):
        case["attention_bias"] = random(rng, BATCH, 1, LENGTH, LENGTH)
    inputs = mha_inputs(rng, **case)
    outputs = 3 if case.get("past") else 1
    expected, actual = run_both(
        "MultiHeadAttention", inputs, outputs, num_heads=HEADS, unidirectional=unidirectional, **attributes
    )
    assert_outputs_match(expected, actual)


def test_multi_head_cross_attention():
    rng = np.random.default_rng(15)
    inputs = mha_inputs(rng, kv_length=6, mask=np.array([[1, 1, 1, 1, 0, 0], [1] * 6], np.int32))
    assert_outputs_match(*run_both("MultiHeadAttention", inputs, num_heads=HEADS))
    with pytest.raises(NotImplementedError, match="MultiHeadAttention: unidirectional with key length"):
        run_both("MultiHeadAttention", inputs, num_heads=HEADS, unidirectional=1)


# --- embeddings and activations ----------------------------------------------------------------


@pytest.mark.parametrize("variant", ["bert", "gpt2", "shared_positions"])
def test_embed_layer_normalization(variant):
    rng = np.random.default_rng(15)
    vocab, positions, hidden, batch, length = 50, 20, 32, 2, 6
    input_ids = rng.integers(0, vocab, (batch, length)).astype(np.int32)
    bert = variant == "bert"
    position_ids = {
        "bert": None,
        "gpt2": rng.integers(0, positions, (batch, length)),
        "shared_positions": rng.integers(0, positions, (1, length)),
    }[variant]
    inputs = [
        ("input_ids", input_ids),
        ("segment_ids", rng.integers(0, 2, (batch, length)).astype(np.int32) if bert else None),
        ("word_embedding", random(rng, vocab, hidden)),
        ("position_embedding", random(rng, positions, hidden)),
        ("segment_embedding", random(rng, 2, hidden) if bert else None),
        ("gamma", random(rng, hidden)),
        ("beta", random(rng, hidden)),
        ("mask", np.array([[1, 1, 1, 1, 0, 0], [1] * 6], np.int32) if variant != "gpt2" else None),
        ("position_ids", None if position_ids is None else position_ids.astype(np.int32)),
    ]
    assert_outputs_match(*run_both("EmbedLayerNormalization", inputs, 3, epsilon=1e-5))


# elementwise: only onnxruntime's vectorised tanh/exp approximations differ, by a few ulps
ELEMENTWISE = dict(rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("with_bias", [False, True])
def test_fast_gelu(with_bias):
    rng = np.random.default_rng(16)
    inputs = [("x", random(rng, 4, HIDDEN, scale=3.0)), ("bias", random(rng, HIDDEN) if with_bias else None)]
    assert_outputs_match(*run_both("FastGelu", inputs), **ELEMENTWISE)


@pytest.mark.parametrize("alpha", [None, 1.3])
def test_quick_gelu(alpha):
    attributes = {} if alpha is None else {"alpha": alpha}
    inputs = [("x", random(np.random.default_rng(17), 4, HIDDEN, scale=3.0))]
    assert_outputs_match(*run_both("QuickGelu", inputs, **attributes), **ELEMENTWISE)


# --- whole models ------------------------------------------------------------------------------


def llama_feeds(batch, past_length):
    rng = np.random.default_rng(18)
    feeds = {"input_ids": rng.integers(3, 1024, (batch, 5)), "attention_mask": np.ones((batch, 5), np.int64)}
    if batch > 1:
        feeds["attention_mask"][0, 3:] = 0  # onnxruntime-genai pads batched prompts on the right
    for layer in range(2):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{layer}.{kind}"] = np.zeros((batch, 2, past_length, 16), np.float32)
    return feeds


def llama_next(feeds, outputs, token):
    mask = np.pad(feeds["attention_mask"], [(0, 0), (0, 1)], constant_values=1)
    feeds = dict(feeds, input_ids=token, attention_mask=mask)
    for index, (layer, kind) in enumerate((layer, kind) for layer in range(2) for kind in ("key", "value")):
        feeds[f"past_key_values.{layer}.{kind}"] = outputs[1 + index]
    return feeds


def gpt2_feeds(batch, past_length):
    rng = np.random.default_rng(19)
    mask = np.ones((batch, 5), np.int32)
    if batch > 1:
        mask[0, 3:] = 0
    feeds = {
        "input_ids": rng.integers(0, 1000, (batch, 5)).astype(np.int32),
        "position_ids": ((np.cumsum(mask, axis=1) - 1) * mask).astype(np.int32),
        "attention_mask": mask,
    }
    feeds.update({f"past_{layer}": np.zeros((2, batch, 4, past_length, 8), np.float32) for layer in range(5)})
    return feeds


def gpt2_next(feeds, outputs, token):
    mask = feeds["attention_mask"]
    feeds = dict(
        feeds,
        input_ids=token.astype(np.int32),
        position_ids=mask.sum(axis=1, keepdims=True).astype(np.int32),
        attention_mask=np.pad(mask, [(0, 0), (0, 1)], constant_values=1),
    )
    feeds.update({f"past_{layer}": outputs[1 + layer] for layer in range(5)})
    return feeds


MODEL_CASES = {
    "llama_fp32": ("tiny-llama-fp32/model.onnx", llama_feeds, llama_next, 1, 0),
    "llama_fp32_batch_shared_buffer": ("tiny-llama-fp32/model.onnx", llama_feeds, llama_next, 2, 8),
    "llama_int4": ("tiny-llama-int4/model.onnx", llama_feeds, llama_next, 1, 0),
    "llama_int4_batch_shared_buffer": ("tiny-llama-int4/model.onnx", llama_feeds, llama_next, 2, 8),
    "gpt2": ("tiny-random-gpt2-fp32/past.onnx", gpt2_feeds, gpt2_next, 1, 0),
    "gpt2_batch": ("tiny-random-gpt2-fp32/past.onnx", gpt2_feeds, gpt2_next, 2, 0),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_decoder_model_matches_onnxruntime(case):
    """A 5-token prompt on an empty past, then one decode step that feeds the presents back."""
    path, first_feeds, next_feeds, batch, past_length = MODEL_CASES[case]
    folder, file = path.split("/")
    path = shared_model(folder) / file  # skips when ../shared/models is absent
    model = onnx.load(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = ReferenceEvaluator(model, new_ops=CONTRIB_OPS)
    feeds = first_feeds(batch, past_length)
    for _ in range(2):
        expected = session.run(None, feeds)
        assert_outputs_match(expected, reference.run(None, feeds))
        token = expected[0][:, -1].argmax(axis=-1)[:, None]
        feeds = next_feeds(feeds, expected, token)


# --- The load check: what each kernel declares it implements ---------------------------------------


def model_with_changed_node(tmp_path, op_type, change):
    """A copy of llama-fp32 whose every `op_type` node is passed to `change` (the weights stay as they are)."""
    import shutil

    from tests.conftest import FIXTURE_MODELS

    folder = tmp_path / "model"
    shutil.copytree(FIXTURE_MODELS / "llama-fp32", folder)
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for node in proto.graph.node:
        if node.op_type == op_type:
            change(node)
    onnx.save(proto, str(folder / "model.onnx"))
    return folder


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda node: node.attribute.append(helper.make_attribute("causal", 0)), "causal=0"),
        (lambda node: node.attribute.append(helper.make_attribute("k_quant_type", "PER_CHANNEL")),
         "k_quant_type='PER_CHANNEL'"),
        (lambda node: node.input.extend(["", "", "position_ids"]), "input='q_norm_weight'"),
    ],
    ids=["attribute", "string_attribute", "input"],
)  # fmt: skip
def test_model_refuses_at_load_a_node_its_kernel_does_not_implement(tmp_path, change, message):
    import gentwin.reference
    from gentwin.reference.decoder import UnsupportedOperatorError

    folder = model_with_changed_node(tmp_path, "GroupQueryAttention", change)
    pattern = rf"node '/model/layers\.0/attn/GroupQueryAttention': GroupQueryAttention: {message} is not supported"
    with pytest.raises(UnsupportedOperatorError, match=pattern):
        gentwin.reference.Model(str(folder))


def if_model(branch_node):
    """A model whose only node is an If with BRANCH_NODE in both branches."""
    branch = helper.make_graph([branch_node], "branch", [], [helper.make_empty_tensor_value_info("y")])
    node = helper.make_node("If", ["condition"], ["out"], then_branch=branch, else_branch=branch)
    return make_model([node], {"condition": np.array(True)}, ["out"])


@pytest.mark.parametrize(
    "branch_node, message",
    [
        (helper.make_node("RotaryEmbedding", ["x", "p", "c", "s"], ["y"], domain="com.microsoft",
                          is_packed_batching=1), "node 'rope': RotaryEmbedding: is_packed_batching=1 is not supported"),
        (helper.make_node("MoE", ["x", "r", "w1"], ["y"], domain="com.microsoft", k=1, activation_type="swiglu"),
         "MoE: swiglu_fusion=0 is not supported"),
        (helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.microsoft"), "no kernel for: com.microsoft.NoSuchOp"),
    ],
    ids=["attribute", "attribute_combination", "operator"],
)  # fmt: skip
def test_the_load_check_reads_subgraphs(branch_node, message):
    from gentwin.reference.decoder import UnsupportedOperatorError, check_supported

    branch_node.name = "rope"
    with pytest.raises(UnsupportedOperatorError, match=message):
        check_supported(if_model(branch_node), "model.onnx")


def test_the_load_check_passes_nodes_their_kernels_implement():
    from gentwin.reference.decoder import check_supported

    node = helper.make_node("RotaryEmbedding", ["x", "p", "c", "s"], ["y"], domain="com.microsoft", interleaved=1)
    check_supported(if_model(node), "model.onnx")
