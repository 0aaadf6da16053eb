"""The kernels of Qwen3.5's linear-attention layers against onnxruntime's CPU kernels: LinearAttention (the
recurrent state, run for whole sequences: a prompt, then steps whose present state is fed back as the next
past), LinearAttentionGate (its decay and write-rate gates) and GatedRMSNorm (the per-head norm gated by z).

Each is one node run by onnxruntime and by onnx's ReferenceEvaluator with CONTRIB_OPS, with the attributes
the official builder writes (LinearAttention: update_rule gated_delta, scale 1, fewer query/key heads than
state heads; GatedRMSNorm: its epsilon, silu) and the others the operators define, on random shapes. They
agree within float32 rounding (RTOL, ATOL): onnxruntime's exp, dot products and sums run in another order.
"""

import numpy as np
import pytest
from onnx import helper

from tests.test_contrib_ops import ATOL, RTOL, random, run_both
from tests.test_contrib_ops_stateful import reference_run

# --- LinearAttention -----------------------------------------------------------------------------


def linear_attention_inputs(rng, batch, length, q_heads, k_heads, state_heads, key_size, value_size,
                            per_key_decay=False, shared_beta=False, with_past=True):  # fmt: skip
    """Random inputs as the builder's graph feeds them: L2-normalized keys, negative decays (log space),
    beta in (0, 1)."""
    keys = random(rng, batch, length, k_heads, key_size)
    keys /= np.linalg.norm(keys, axis=-1, keepdims=True)
    decay_width = state_heads * key_size if per_key_decay else state_heads
    return {
        "query": random(rng, batch, length, q_heads * key_size, scale=0.3),
        "key": keys.reshape(batch, length, -1).astype(np.float32),
        "value": random(rng, batch, length, state_heads * value_size),
        "past_state": random(rng, batch, state_heads, key_size, value_size) if with_past else None,
        "decay": -rng.uniform(0.01, 2.0, (batch, length, decay_width)).astype(np.float32),
        "beta": rng.uniform(0, 1, (batch, length, 1 if shared_beta else state_heads)).astype(np.float32),
    }


def run_linear_attention(inputs, **attributes):
    return run_both("LinearAttention", list(inputs.items()), ["output", "present_state"], **attributes)


def assert_close(expected, actual):
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("length", [1, 6], ids=["decode", "prompt"])
@pytest.mark.parametrize("q_heads, state_heads", [(2, 4), (1, 3), (2, 2)], ids=["qwen3.5", "one_query", "equal"])
@pytest.mark.parametrize("with_past", [True, False], ids=["past", "no_past"])
def test_linear_attention_gated_delta(length, q_heads, state_heads, with_past):
    """The builder's node: gated_delta, scale 1 (the query comes pre-scaled), as many key heads as query heads,
    fewer than the states (Qwen3.5's value heads), key and value sizes apart."""
    rng = np.random.default_rng(length * 100 + q_heads * 10 + state_heads)
    batch = int(rng.integers(1, 4))
    inputs = linear_attention_inputs(rng, batch, length, q_heads, q_heads, state_heads, 8, 12, with_past=with_past)
    attributes = {"q_num_heads": q_heads, "kv_num_heads": state_heads, "update_rule": "gated_delta", "scale": 1.0,
                  "state_window": 0}
    assert_close(*run_linear_attention(inputs, **attributes))


@pytest.mark.parametrize("update_rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize("layout", ["per_head", "per_key_decay_shared_beta"])
def test_linear_attention_update_rules(update_rule, layout):
    """Every update rule, the default scale (1 / sqrt(Dk)), GQA (more query heads than states), and the
    other gate layouts: a decay per key channel, one beta for every head."""
    rng = np.random.default_rng(len(update_rule) * 10 + len(layout))
    options = {"per_key_decay": layout != "per_head", "shared_beta": layout != "per_head"}
    inputs = linear_attention_inputs(rng, 2, 5, 4, 2, 2, 8, 8, **options)
    assert_close(*run_linear_attention(inputs, q_num_heads=4, kv_num_heads=2, update_rule=update_rule))


def test_linear_attention_state_carries_a_sequence_split_into_steps():
    """A prompt, a chunk and single tokens, each run's present state fed back as the next past, give the
    outputs and the state that the whole sequence in one run gives, on both engines."""
    rng = np.random.default_rng(3)
    steps = [4, 3, 1, 1, 1]
    whole = linear_attention_inputs(rng, 2, sum(steps), 2, 2, 4, 8, 8, with_past=False)
    attributes = {"q_num_heads": 2, "kv_num_heads": 4, "scale": 1.0}
    whole_expected, whole_actual = run_linear_attention(whole, **attributes)
    assert_close(whole_expected, whole_actual)

    states, outputs, start = [None, None], [[], []], 0  # onnxruntime's, the reference's
    for length in steps:
        chunk = {name: None if value is None else value[:, start : start + length] for name, value in whole.items()}
        start += length
        runs = [run_linear_attention({**chunk, "past_state": state}, **attributes) for state in states]
        for engine, (expected, actual) in enumerate(runs):
            output, present = (expected, actual)[engine]
            outputs[engine].append(output)
            states[engine] = present
    for engine in range(2):
        np.testing.assert_allclose(np.concatenate(outputs[engine], axis=1), whole_expected[0], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(states[engine], whole_expected[1], rtol=RTOL, atol=ATOL)


def linear_attention_node(**attributes):
    return helper.make_node("LinearAttention", ["q", "k", "v", "p", "g", "b"], ["y", "s"], domain="com.microsoft",
                            **{"q_num_heads": 2, "kv_num_heads": 4, **attributes})


@pytest.mark.parametrize(
    "attributes, error, message",
    [
        ({"state_window": 2}, NotImplementedError, "state_window=2 is not supported"),
        ({"update_rule": "softmax"}, ValueError, "update_rule must be one of linear, gated, delta, gated_delta"),
        ({"kv_num_heads": 3}, ValueError, "kv_num_heads=3 is not a multiple of 2 heads"),
    ],
)
def test_linear_attention_refuses_what_it_does_not_implement(attributes, error, message):
    rng = np.random.default_rng(0)
    inputs = linear_attention_inputs(rng, 1, 2, 2, 2, 4, 8, 8)
    feeds = dict(zip(["q", "k", "v", "p", "g", "b"], inputs.values()))
    if attributes.get("kv_num_heads") == 3:
        feeds["v"] = random(rng, 1, 2, 3 * 8)
    with pytest.raises(error, match=f"LinearAttention: {message}"):
        reference_run(linear_attention_node(**attributes), feeds)


def test_linear_attention_refuses_a_past_state_of_another_shape():
    rng = np.random.default_rng(0)
    feeds = dict(zip(["q", "k", "v", "p", "g", "b"], linear_attention_inputs(rng, 1, 2, 2, 2, 4, 8, 8).values()))
    feeds["p"] = random(rng, 1, 2, 8, 8)
    with pytest.raises(ValueError, match=r"LinearAttention: past_state must be \[1, 4, 8, 8\]"):
        reference_run(linear_attention_node(), feeds)


# --- LinearAttentionGate -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 4), (2, 7, 4), (3, 5, 7)], ids=["decode", "prompt", "odd_heads"])
@pytest.mark.parametrize("with_beta", [True, False], ids=["beta", "decay_only"])
def test_linear_attention_gate(shape, with_beta):
    """decay = decay_scale * softplus(a + dt_bias) (the builder's decay_scale is -exp(A_log)), beta = sigmoid(b),
    over arguments of both signs and large magnitudes, where the stable forms matter."""
    rng = np.random.default_rng(sum(shape))
    heads = shape[-1]
    b = random(rng, *shape, scale=6.0) if with_beta else None
    inputs = [("a", random(rng, *shape, scale=6.0)), ("dt_bias", random(rng, heads)),
              ("decay_scale", -np.exp(random(rng, heads))), ("b", b)]
    outputs = ["decay", "beta"] if with_beta else ["decay"]
    assert_close(*run_both("LinearAttentionGate", inputs, outputs))


def test_linear_attention_gate_refuses_beta_without_b():
    rng = np.random.default_rng(0)
    feeds = {"a": random(rng, 1, 2, 4), "t": random(rng, 4), "s": random(rng, 4)}
    node = helper.make_node("LinearAttentionGate", ["a", "t", "s"], ["g", "beta"], domain="com.microsoft")
    with pytest.raises(ValueError, match="LinearAttentionGate: the b input is required when the beta output"):
        reference_run(node, feeds)


# --- GatedRMSNorm --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, group", [((1, 1, 64), 16), ((2, 5, 64), 16), ((2, 3, 48), 48)],
                         ids=["decode_per_head", "prompt_per_head", "one_group"])
@pytest.mark.parametrize("activation", ["silu", "sigmoid"])
@pytest.mark.parametrize("epsilon", [1e-6, 1e-5])
def test_gated_rms_norm(shape, group, activation, epsilon):
    """The builder's node (per value head, its RMS epsilon, silu) and the other activation, one norm group."""
    rng = np.random.default_rng(shape[1] * 100 + group)
    inputs = [("X", random(rng, *shape, scale=2.0)), ("scale", random(rng, group)),
              ("gate", random(rng, *shape, scale=4.0))]
    assert_close(*run_both("GatedRMSNorm", inputs, 1, epsilon=epsilon, activation=activation))


def test_gated_rms_norm_refuses_an_unknown_activation():
    rng = np.random.default_rng(0)
    feeds = {"x": random(rng, 1, 2, 8), "s": random(rng, 8), "z": random(rng, 1, 2, 8)}
    node = helper.make_node("GatedRMSNorm", ["x", "s", "z"], ["y"], domain="com.microsoft", activation="relu")
    with pytest.raises(ValueError, match="GatedRMSNorm: activation must be one of silu, sigmoid, not 'relu'"):
        reference_run(node, feeds)
