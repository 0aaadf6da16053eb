"""com.microsoft Attention: multi-head self-attention with the Q/K/V projection inside, the GPT-2 layout."""

import numpy as np

from .attention_common import attend_masked, merge_heads, split_heads
from .contrib_op import ContribOp


class Attention(ContribOp):
    """Q, K, V = input @ weights + bias, split into num_heads heads; with a past [2, B, N, P, D] the new
    keys and values are appended to it; output = softmax(scale * Q K^T + masks + attention_bias) V and
    present = [K; V] of shape [2, B, N, P + S, D]. mask_index marks padding keys (see `mask_bias`);
    unidirectional hides the keys after each query.
    """

    implemented_values = {"do_rotary": (0,), "past_present_share_buffer": (0,)}
    unimplemented_inputs = {6: "past_sequence_length"}

    def _run(
        self,
        x,
        weights,
        bias=None,
        mask_index=None,
        past=None,
        attention_bias=None,
        past_sequence_length=None,
        num_heads=None,
        unidirectional=0,
        scale=0.0,
        mask_filter_value=-10000.0,
        qkv_hidden_sizes=None,
        do_rotary=0,
        rotary_embedding_dim=0,
        past_present_share_buffer=0,
    ):
        if past is not None and attention_bias is not None:
            raise ValueError("Attention: past and attention_bias cannot be used together.")
        sizes = qkv_hidden_sizes or [weights.shape[1] // 3] * 3
        qkv = x @ weights  # [B, S, Dq + Dk + Dv]
        if bias is not None:
            qkv = qkv + bias
        query, key, value = np.split(qkv, np.cumsum(sizes)[:2], axis=-1)
        q = split_heads(query, num_heads)  # [B, N, S, D]
        k = split_heads(key, num_heads)  # [B, N, S, D]
        v = split_heads(value, num_heads)  # [B, N, S, Dv]
        if past is not None:
            k = np.concatenate([past[0], k], axis=2)  # [B, N, P + S, D]
            v = np.concatenate([past[1], v], axis=2)  # [B, N, P + S, Dv]

        output = attend_masked(
            "Attention", q, k, v, scale, mask_index, unidirectional, mask_filter_value, attention_bias
        )  # [B, N, S, Dv]
        return self.outputs(merge_heads(output), np.stack([k, v]))  # [B, S, N*Dv], [2, B, N, T, D]
