"""The kernels that carry state from one model run to the next, against onnxruntime's CPU kernels:
CausalConvWithState (LFM2's and Qwen3.5's convolution state) and GroupQueryAttention over a windowed
KV cache (sliding_window_cache=1, gemma2/gemma3/gpt-oss local layers), run for whole sequences: a
prompt, then steps whose present is fed back as the next past, past the window and the capacity.

Each step is one node run by onnxruntime and by onnx's ReferenceEvaluator with CONTRIB_OPS, each
engine fed back its own present. CausalConvWithState agrees bit for bit (the same float32 sums in the
same order, glibc's expf for SiLU); GroupQueryAttention within float32 rounding (RTOL, ATOL), its
softmax summing in another order. Where a windowed present's slots are specified, they are also
checked against the values fed in, at the positions the operator's documented layout puts them.
"""

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from gentwin.reference.ops import CONTRIB_OPS
from tests.test_contrib_ops import (
    ATOL,
    RTOL,
    make_model,
    random,
    rotary_caches,
    run_both,
)

# --- CausalConvWithState -------------------------------------------------------------------------

# kernel sizes: LFM2's L_cache is 3, Qwen3.5's linear-attention convolution has 4 taps
CONV_KERNELS = [2, 3, 4, 6]


def conv_step(rng, batch, channels, length, taps, dilation, channels_last, with_past):
    """Random input, past state (or None), for one run -> (input, past_state)."""
    state_length = (taps - 1) * dilation
    if channels_last:
        return random(rng, batch, length, channels), random(rng, batch, state_length, channels) if with_past else None
    return random(rng, batch, channels, length), random(rng, batch, channels, state_length) if with_past else None


def run_conv(x, weight, bias, past, **attributes):
    inputs = [("input", x), ("weight", weight), ("bias", bias), ("past_state", past)]
    return run_both("CausalConvWithState", inputs, ["output", "present_state"], **attributes)


def assert_identical(expected, actual):
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("taps", CONV_KERNELS)
@pytest.mark.parametrize("activation", ["none", "silu", "swish"])
@pytest.mark.parametrize("length", [1, 7], ids=["decode", "prompt"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_causal_conv_with_state(taps, activation, length, with_bias):
    """The attributes the official builder writes (ndim 1, activation none for LFM2, silu for Qwen3.5,
    state_window 0), on random shapes."""
    rng = np.random.default_rng(taps * 10 + length)
    batch, channels = int(rng.integers(1, 4)), int(rng.integers(1, 12))
    x, past = conv_step(rng, batch, channels, length, taps, 1, False, True)
    weight, bias = random(rng, channels, 1, taps), random(rng, channels) if with_bias else None
    assert_identical(*run_conv(x, weight, bias, past, ndim=1, activation=activation, state_window=0))


@pytest.mark.parametrize("dilation", [1, 3])
@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("length", [1, 5], ids=["decode", "prompt"])
@pytest.mark.parametrize("with_past", [True, False], ids=["past", "no_past"])
def test_causal_conv_with_state_layouts(dilation, channels_last, length, with_past):
    """Dilation, the channels-last layout, and an omitted past (zeros: the sequence starts here)."""
    rng = np.random.default_rng(dilation * 100 + channels_last * 10 + length)
    x, past = conv_step(rng, 2, 6, length, 3, dilation, channels_last, with_past)
    weight, bias = random(rng, 6, 1, 3), random(rng, 6)
    attributes = {"activation": "silu", "dilation": dilation, "channels_last": channels_last}
    assert_identical(*run_conv(x, weight, bias, past, **attributes))


def test_causal_conv_with_state_channels_last_keeps_several_channel_axes():
    rng = np.random.default_rng(7)
    x, past = random(rng, 2, 4, 3, 5), random(rng, 2, 2, 3, 5)  # [B, L, d1, d2], [B, P, d1, d2]
    assert_identical(*run_conv(x, random(rng, 15, 1, 3), random(rng, 15), past, channels_last=1))


@pytest.mark.parametrize("taps, dilation", [(3, 1), (4, 2)])
def test_causal_conv_state_carries_a_stream_split_into_steps(taps, dilation):
    """A prompt, a chunk and single tokens, each run's present fed back as the next past, give the
    outputs and the state that the whole stream in one run gives, on both engines."""
    rng = np.random.default_rng(taps)
    batch, channels, steps = 2, 5, [4, 3, 1, 1, 1]
    stream = random(rng, batch, channels, sum(steps))
    weight, bias = random(rng, channels, 1, taps), random(rng, channels)
    whole_expected, whole_actual = run_conv(stream, weight, bias, None, activation="silu", dilation=dilation)
    assert_identical(whole_expected, whole_actual)

    states = [None, None]  # onnxruntime's, the reference's
    outputs = [[], []]
    start = 0
    for length in steps:
        chunk = stream[..., start : start + length]
        start += length
        expected, _ = run_conv(chunk, weight, bias, states[0], activation="silu", dilation=dilation)
        _, actual = run_conv(chunk, weight, bias, states[1], activation="silu", dilation=dilation)
        for engine, (output, present) in enumerate([expected, actual]):
            outputs[engine].append(output)
            states[engine] = present
    for engine in range(2):
        np.testing.assert_array_equal(np.concatenate(outputs[engine], axis=-1), whole_expected[0])
        np.testing.assert_array_equal(states[engine], whole_expected[1])
        np.testing.assert_array_equal(states[engine], stream[..., -(taps - 1) * dilation :])


def reference_run(node, feeds):
    model = make_model([node], feeds, list(node.output))
    return ReferenceEvaluator(model, new_ops=CONTRIB_OPS).run(None, feeds)


@pytest.mark.parametrize(
    "attributes, error, message",
    [
        ({"state_window": 2}, NotImplementedError, "state_window=2 is not supported"),
        ({"ndim": 2}, NotImplementedError, "ndim=2 is not supported"),
        ({"activation": "gelu"}, ValueError, "activation must be one of none, silu, swish, not 'gelu'"),
        ({"dilation": 0}, ValueError, "dilation must be at least 1"),
    ],
)
def test_causal_conv_with_state_refuses_unsupported_attributes(attributes, error, message):
    rng = np.random.default_rng(0)
    feeds = {"x": random(rng, 1, 4, 2), "w": random(rng, 4, 1, 3), "b": random(rng, 4), "p": random(rng, 1, 4, 2)}
    node = helper.make_node("CausalConvWithState", list(feeds), ["y", "s"], domain="com.microsoft", **attributes)
    with pytest.raises(error, match=f"CausalConvWithState: {message}"):
        reference_run(node, feeds)


@pytest.mark.parametrize(
    "shapes, message",
    [
        ({"p": (1, 4, 3)}, r"past_state must be \[1, 4, 2\]"),
        ({"w": (4, 2, 3)}, r"weight must be \[channels=4, 1, kernel_size\], not \[4, 2, 3\]"),
        ({"b": (3,)}, r"bias must be \[channels=4\], not \[3\]"),
    ],
)
def test_causal_conv_with_state_refuses_mismatched_shapes(shapes, message):
    rng = np.random.default_rng(0)
    sizes = {"x": (1, 4, 2), "w": (4, 1, 3), "b": (4,), "p": (1, 4, 2)} | shapes
    feeds = {name: random(rng, *shape) for name, shape in sizes.items()}
    node = helper.make_node("CausalConvWithState", list(feeds), ["y", "s"], domain="com.microsoft")
    with pytest.raises(ValueError, match=f"CausalConvWithState: {message}"):
        reference_run(node, feeds)


# --- GroupQueryAttention over a windowed KV cache -------------------------------------------------

NUM_HEADS, KV_HEADS, HEAD_SIZE = 4, 2, 16  # onnxruntime rotates head sizes in multiples of 16
MAX_POSITIONS = 64

# the attributes the official builder writes on a local layer, per model family
BUILDER_PROFILES = {
    "gemma2": {"scale": 0.25, "softcap": 50.0},  # query_pre_attn_scalar ** -0.5, attn_logit_softcapping
    "gemma3": {"scale": 0.25},
    "gpt-oss": {"head_sink": True},  # the layer's sinks initializer
    "softcap-bites": {"softcap": 1.5},  # a cap the random scores reach
}


def resident_after(total, capacity, window):
    """How many positions the windowed buffer holds after `total` tokens, by playing the eviction one
    token at a time: when a token finds the buffer full, all but the window's newest window - 1 go."""
    resident = 0
    for _ in range(total):
        if resident == capacity:
            resident = window - 1
        resident += 1
    return resident


class GqaStream:
    """A whole sequence through one GroupQueryAttention node. By default each step's present from
    onnxruntime is the next step's past for both engines, so the reference reads the buffer exactly as
    onnxruntime left it, its unspecified slots included; with own_past each engine is fed back its own.
    values[b][p] is the value vector fed for row b's absolute position p."""

    def __init__(self, rng, batch, capacity, profile, window, sliding_window_cache=1, packed=True, own_past=False):
        self.rng, self.packed, self.capacity, self.window, self.own_past = rng, packed, capacity, window, own_past
        self.attributes = {"num_heads": NUM_HEADS, "kv_num_heads": KV_HEADS, "do_rotary": 1}
        self.attributes |= {name: value for name, value in profile.items() if name != "head_sink"}
        self.attributes |= {"local_window_size": window, "sliding_window_cache": sliding_window_cache}
        self.head_sink = random(rng, NUM_HEADS) if profile.get("head_sink") else None
        self.cos, self.sin = rotary_caches(rng, HEAD_SIZE, MAX_POSITIONS)
        # garbage, as in a reused buffer: nothing is resident before the first prompt
        self.past = [random(rng, batch, KV_HEADS, capacity, HEAD_SIZE) for _ in range(2)]
        self.reference_past = self.past
        self.values = [[] for _ in range(batch)]

    def step(self, new_tokens, valid_lengths, attention_bias=False):
        """Run new_tokens tokens per row, after which row b holds valid_lengths[b] tokens (past + new)
        -> onnxruntime's and the reference's outputs."""
        batch, total = len(valid_lengths), max(valid_lengths)
        qkv = random(self.rng, batch, new_tokens, (NUM_HEADS + 2 * KV_HEADS) * HEAD_SIZE, scale=2.0)
        new_values = qkv[..., (NUM_HEADS + KV_HEADS) * HEAD_SIZE :].reshape(batch, new_tokens, KV_HEADS, HEAD_SIZE)
        first_prompt = new_tokens == total
        for row, length in enumerate(valid_lengths):
            past_length = 0 if first_prompt else length - new_tokens
            self.values[row] = self.values[row][:past_length] + list(new_values[row, : length - past_length])
        bias = random(self.rng, batch, 1, new_tokens, total) if attention_bias else None
        expected, actual = run_both("GroupQueryAttention", self._inputs(qkv, valid_lengths, bias), 3, **self.attributes)
        if self.own_past:
            self.past = self.reference_past
            _, actual = run_both("GroupQueryAttention", self._inputs(qkv, valid_lengths, bias), 3, **self.attributes)
            self.reference_past = actual[1:]
        self.past = expected[1:]
        return expected, actual

    def _inputs(self, qkv, valid_lengths, bias):
        if self.packed:
            query, key, value = qkv, None, None
        else:
            split = np.split(qkv, [NUM_HEADS * HEAD_SIZE, (NUM_HEADS + KV_HEADS) * HEAD_SIZE], axis=-1)
            query, key, value = (np.ascontiguousarray(part) for part in split)
        seqlens_k = np.array(valid_lengths, np.int32) - 1
        total = np.array(max(valid_lengths), np.int32)
        return [
            ("query", query), ("key", key), ("value", value),
            ("past_key", self.past[0]), ("past_value", self.past[1]),
            ("seqlens_k", seqlens_k), ("total_sequence_length", total),
            ("cos_cache", self.cos), ("sin_cache", self.sin),
            ("position_ids", None), ("attention_bias", bias), ("head_sink", self.head_sink),
        ]  # fmt: skip

    def check(self, expected, actual, valid_lengths):
        """The outputs agree; the presents agree on their resident slots, which hold the values fed for
        the newest positions in order, and have the past's shape."""
        np.testing.assert_allclose(actual[0], expected[0], rtol=RTOL, atol=ATOL)
        for present in (expected[1], expected[2], actual[1], actual[2]):
            assert present.shape == self.past[0].shape
        for row, length in enumerate(valid_lengths):
            resident = resident_after(length, self.capacity, self.window)
            newest = np.stack(self.values[row][length - resident : length], axis=1)  # [Nkv, L, D]
            for engine in (expected, actual):
                np.testing.assert_array_equal(engine[2][row, :, :resident], newest)
            want, got = expected[1][row, :, :resident], actual[1][row, :, :resident]
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("profile", list(BUILDER_PROFILES))
@pytest.mark.parametrize("capacity, window", [(4, 4), (7, 4), (6, 3)], ids=["C=W", "C=W+3", "C=2W"])
@pytest.mark.parametrize("own_past", [False, True], ids=["onnxruntime_buffer", "own_buffer"])
def test_windowed_cache_decodes_past_the_window(profile, capacity, window, own_past):
    """A batched prompt, then one token per row per step until each row is past three times the
    capacity: the cache fills, evicts, refills. Row 0 first drops its last token (a rewind), so the
    rows' lengths and resident ranges differ from then on."""
    rng = np.random.default_rng(capacity * 10 + window)
    stream = GqaStream(rng, 2, capacity, BUILDER_PROFILES[profile], window, packed=profile != "gemma3", own_past=own_past)
    stream.check(*stream.step(3, [3, 3]), [3, 3])
    valid_lengths = [3, 4]
    stream.check(*stream.step(1, valid_lengths), valid_lengths)
    while min(valid_lengths) < 3 * capacity + 2:
        valid_lengths = [length + 1 for length in valid_lengths]
        stream.check(*stream.step(1, valid_lengths), valid_lengths)


@pytest.mark.parametrize("steps", [[9], [3, 6], [5, 1, 4, 1], [2, 11, 1]], ids=str)
@pytest.mark.parametrize("attention_bias", [False, True], ids=["no_bias", "attention_bias"])
def test_windowed_cache_prompts_longer_than_the_capacity(steps, attention_bias):
    """Prompts and chat-style appends of several tokens (batch 1), longer than the window and than the
    capacity, with an attention_bias indexed by absolute key position."""
    capacity, window = 6, 4
    stream = GqaStream(np.random.default_rng(len(steps)), 1, capacity, BUILDER_PROFILES["gemma2"], window)
    length = 0
    for new_tokens in steps:
        length += new_tokens
        stream.check(*stream.step(new_tokens, [length], attention_bias), [length])


def test_windowed_cache_prompt_longer_than_the_capacity_in_a_batch():
    """A batched first prompt longer than the capacity: each row keeps its own newest positions."""
    stream = GqaStream(np.random.default_rng(5), 3, 5, BUILDER_PROFILES["gpt-oss"], 4)
    for length, new_tokens in [(11, 11), (12, 1), (13, 1)]:
        stream.check(*stream.step(new_tokens, [length] * 3, attention_bias=True), [length] * 3)


def test_windowed_cache_refuses_a_right_padded_prompt():
    """onnxruntime ends every row's new tokens at its seqlens_k, so a row shorter than the step is refused."""
    stream = GqaStream(np.random.default_rng(5), 2, 6, {}, 4)
    with pytest.raises(Exception, match=r"seqlens_k\[0\] = 1 is too small for sequence_length 3") as raised:
        stream.step(3, [2, 3])
    assert "onnxruntime" in type(raised.value).__module__
    with pytest.raises(ValueError, match=r"GroupQueryAttention: seqlens_k\[0\] = 1 is too small for sequence_length 3"):
        run_reference(stream, [2, 3], 3)


def test_windowed_cache_rewind_within_the_resident_positions():
    """Dropping k tokens is a smaller seqlens_k over the same buffer, exact while L(T - k) = L(T) - k."""
    capacity, window = 8, 3
    stream = GqaStream(np.random.default_rng(6), 1, capacity, BUILDER_PROFILES["gemma3"], window)
    stream.check(*stream.step(4, [4]), [4])
    stream.check(*stream.step(3, [7]), [7])
    assert resident_after(5, capacity, window) == resident_after(7, capacity, window) - 2
    stream.check(*stream.step(1, [6]), [6])  # drop the last 2 tokens, add one


@pytest.mark.parametrize("profile", list(BUILDER_PROFILES))
@pytest.mark.parametrize("window", [1, 2, 5])
def test_local_window_over_a_full_cache(profile, window):
    """local_window_size without sliding_window_cache (exports made before it existed): a max-length
    buffer, the window masking keys, after a right-padded batched prompt.

    The padding queries of the prompt are left out: with softcap or head_sink, onnxruntime 1.31 treats
    one as the row's last valid token (keys T - W .. T - 1), without them as a query at its own position
    (none of whose window may be valid); the reference does the latter throughout.
    """
    stream = GqaStream(np.random.default_rng(window), 2, 20, BUILDER_PROFILES[profile], window, sliding_window_cache=0)
    valid_lengths = [3, 6]
    expected, actual = stream.step(6, valid_lengths)
    for row, length in enumerate(valid_lengths):
        np.testing.assert_allclose(actual[0][row, :length], expected[0][row, :length], rtol=RTOL, atol=ATOL)
    assert_allclose_outputs(expected[1:], actual[1:])
    for _ in range(8):
        valid_lengths = [length + 1 for length in valid_lengths]
        assert_allclose_outputs(*stream.step(1, valid_lengths))


@pytest.mark.parametrize(
    "window, capacity, message",
    [
        (-1, 6, "sliding_window_cache=1 needs local_window_size > 0, not -1"),
        (4, 3, "sliding_window_cache=1 with a cache of 3 slots, fewer than local_window_size=4"),
    ],
)
def test_windowed_cache_refuses_what_onnxruntime_refuses(window, capacity, message):
    stream = GqaStream(np.random.default_rng(0), 1, capacity, {}, window)
    with pytest.raises(Exception, match="GroupQueryAttention|sliding_window_cache") as raised:
        stream.step(2, [2])
    assert "onnxruntime" in type(raised.value).__module__  # onnxruntime refuses it first
    with pytest.raises(ValueError, match=f"GroupQueryAttention: {message}"):
        run_reference(stream, [2], 2)


def run_reference(stream, valid_lengths, new_tokens):
    """One step of the stream's node on the reference alone."""
    qkv = random(stream.rng, len(valid_lengths), new_tokens, (NUM_HEADS + 2 * KV_HEADS) * HEAD_SIZE)
    inputs = stream._inputs(qkv, valid_lengths, None)
    names = [name if array is not None else "" for name, array in inputs]
    while names[-1] == "":
        names.pop()
    attributes = stream.attributes
    node = helper.make_node("GroupQueryAttention", names, ["out", "k", "v"], domain="com.microsoft", **attributes)
    return reference_run(node, {name: array for name, array in inputs if array is not None})


def assert_allclose_outputs(expected, actual):
    """Full-cache presents: the slots past a row's valid length are specified too (copied or zeros)."""
    for want, got in zip(expected, actual):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
