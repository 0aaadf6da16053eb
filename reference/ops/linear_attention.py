"""com.microsoft LinearAttention: attention as a recurrence over a fixed-size state per head (Qwen3.5's
gated delta rule), as onnxruntime's CPU kernel computes it.

Shapes: B batch, T new positions, Hq query heads, Hk key heads, Hv state ("kv") heads, Dk key and query
head size, Dv value head size. The state S of a head is a [Dk, Dv] matrix: an associative memory mapping
keys to values. Each position t updates it, then the query reads it:

    S = exp(g_t) * S                          decay (update_rule gated, gated_delta)
    S = S + k_t (beta_t (v_t - S^T k_t))^T    delta rule: write the error of what S recalls for k_t
                                              (delta, gated_delta; linear and gated write k_t v_t^T)
    o_t = scale * S^T q_t

The state carries from one run to the next (past_state -> present_state), so a prompt of T tokens and
the same tokens fed one at a time leave the same state; an omitted past_state is zeros.

Heads: with Hq >= Hv several query heads read one state (GQA); with Hq < Hv (Qwen3.5: fewer key heads
than value heads) one query head serves Hv / Hq states, and one key head Hv / Hk of them.
"""

import numpy as np

from ..cpp_arithmetic import expf
from .contrib_op import ContribOp

RULES = ("linear", "gated", "delta", "gated_delta")
DECAYS = ("gated", "gated_delta")   # the rules that decay the state by exp(g)
DELTAS = ("delta", "gated_delta")   # the rules that write the recall error, scaled by beta


class LinearAttention(ContribOp):
    """output [B, T, max(Hq, Hv) * Dv], present_state [B, Hv, Dk, Dv] from query [B, T, Hq * Dk],
    key [B, T, Hk * Dk], value [B, T, Hv * Dv], past_state, decay [B, T, Hv] (or [B, T, Hv * Dk]: one
    per key channel) and beta [B, T, Hv] (or [B, T, 1]). scale 0 means 1 / sqrt(Dk).

    onnxruntime computes in float32 only and implements state_window 0 only on the CPU; so does this.
    """

    implemented_values = {"state_window": (0,)}
    widens_half_inputs = False

    def _run(self, query, key, value, past_state=None, decay=None, beta=None, q_num_heads=0, kv_num_heads=0,
             update_rule="gated_delta", scale=0.0, chunk_size=64, state_window=0):  # fmt: skip
        check_float32(query, key, value, past_state, decay, beta)
        if update_rule not in RULES:
            raise ValueError(f"LinearAttention: update_rule must be one of {', '.join(RULES)}, not {update_rule!r}.")
        batch, length, _ = query.shape
        q = split_heads(query, q_num_heads)                              # [B, T, Hq, Dk]
        k = split_heads(key, key.shape[-1] // q.shape[-1])               # [B, T, Hk, Dk]
        v = split_heads(value, kv_num_heads)                             # [B, T, Hv, Dv]
        state_heads, key_size, value_size = kv_num_heads, q.shape[-1], v.shape[-1]
        q, k = per_state_head(q, state_heads), per_state_head(k, state_heads)  # [B, T, Hv or Hq, Dk]
        scale = np.float32(scale or 1 / np.sqrt(np.float32(key_size)))
        state = np.zeros((batch, state_heads, key_size, value_size), np.float32)
        if past_state is not None:
            check_past_state(past_state, state.shape)
            state = past_state.copy()                                    # [B, Hv, Dk, Dv]
        decays = decay_factors(decay, update_rule, batch, length, state_heads, key_size)  # [B, T, Hv, Dk, 1]
        rates = beta_rates(beta, update_rule, batch, length, state_heads)  # [B, T, Hv, 1]

        outputs = []
        for t in range(length):
            state = step(state, k[:, t], v[:, t], decays[:, t], rates[:, t], update_rule)  # [B, Hv, Dk, Dv]
            outputs.append(read(state, q[:, t], scale))                  # [B, max(Hq, Hv), Dv]
        output = np.stack(outputs, axis=1).reshape(batch, length, -1)    # [B, T, max(Hq, Hv) * Dv]
        return self.outputs(output, state)


def step(state, key, value, decay, rate, update_rule):
    """One position's update of every state [B, Hv, Dk, Dv] by its key [B, Hv, Dk] and value [B, Hv, Dv]."""
    if update_rule in DECAYS:
        state = state * decay                                            # [B, Hv, Dk, Dv]
    if update_rule in DELTAS:
        recalled = np.einsum("bhk,bhkv->bhv", key, state)                # [B, Hv, Dv]
        written = rate * (value - recalled)                              # [B, Hv, Dv]
    else:
        written = value
    return state + key[..., :, None] * written[..., None, :]             # [B, Hv, Dk, Dv]


def read(state, query, scale):
    """Each query head's readout scale * S^T q of its state: [B, max(Hq, Hv), Dv]."""
    heads_per_state = query.shape[1] // state.shape[1]
    states = np.repeat(state, heads_per_state, axis=1)                   # [B, max(Hq, Hv), Dk, Dv]
    return scale * np.einsum("bhk,bhkv->bhv", query, states)             # [B, max(Hq, Hv), Dv]


def split_heads(x, heads):
    """[B, T, H * D] -> [B, T, H, D]."""
    batch, length, hidden = x.shape
    if heads <= 0 or hidden % heads:
        raise ValueError(f"LinearAttention: a hidden size of {hidden} does not split into {heads} heads.")
    return x.reshape(batch, length, heads, hidden // heads)              # [B, T, H, D]


def per_state_head(x, state_heads):
    """Query or key heads [B, T, H, D] lined up with the states: a head serving Hv / H states repeated
    (Qwen3.5's fewer key heads); more heads than states are kept (GQA: several read one state)."""
    heads = x.shape[2]
    if heads >= state_heads:
        if heads % state_heads:
            raise ValueError(f"LinearAttention: {heads} heads do not group over kv_num_heads={state_heads}.")
        return x
    if state_heads % heads:
        raise ValueError(f"LinearAttention: kv_num_heads={state_heads} is not a multiple of {heads} heads.")
    return np.repeat(x, state_heads // heads, axis=2)                    # [B, T, Hv, D]


def decay_factors(decay, update_rule, batch, length, state_heads, key_size):
    """exp(g) per state head, or per key channel: [B, T, Hv, Dk or 1, 1] (ones for rules without decay)."""
    if update_rule not in DECAYS:
        return np.ones((batch, length, state_heads, 1, 1), np.float32)
    if decay is None:
        raise ValueError(f"LinearAttention: update_rule={update_rule} needs the decay input.")
    factors = expf(decay).reshape(decay.shape)                           # [B, T, Hv or Hv * Dk]
    if decay.shape[-1] == state_heads * key_size:
        return factors.reshape(batch, length, state_heads, key_size, 1)  # [B, T, Hv, Dk, 1]
    if decay.shape[-1] != state_heads:
        raise ValueError(f"LinearAttention: decay's last dimension must be {state_heads} or "
                         f"{state_heads * key_size}, not {decay.shape[-1]}.")
    return factors.reshape(batch, length, state_heads, 1, 1)             # [B, T, Hv, 1, 1]


def beta_rates(beta, update_rule, batch, length, state_heads):
    """The write rate per state head: [B, T, Hv, 1] (ones for rules without a delta)."""
    if update_rule not in DELTAS:
        return np.ones((batch, length, state_heads, 1), np.float32)
    if beta is None:
        raise ValueError(f"LinearAttention: update_rule={update_rule} needs the beta input.")
    if beta.shape[-1] not in (1, state_heads):
        raise ValueError(f"LinearAttention: beta's last dimension must be {state_heads} or 1, not {beta.shape[-1]}.")
    return np.broadcast_to(beta, (batch, length, state_heads))[..., None]  # [B, T, Hv, 1]


def check_float32(*tensors):
    for tensor in tensors:
        if tensor is not None and tensor.dtype != np.float32:
            raise NotImplementedError(f"LinearAttention: {tensor.dtype} inputs are not supported by gentwin.reference "
                                      "(onnxruntime's CPU kernel takes float32 only).")


def check_past_state(past_state, expected):
    if past_state.shape != expected:
        raise ValueError(f"LinearAttention: past_state must be {list(expected)} (batch, kv_num_heads, key and value "
                         f"head sizes), not {list(past_state.shape)}.")
