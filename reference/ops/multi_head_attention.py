"""com.microsoft MultiHeadAttention: attention over already-projected queries, keys and values."""

import numpy as np

from .attention_common import attend_masked, merge_heads, split_heads
from .contrib_op import ContribOp, unsupported


class MultiHeadAttention(ContribOp):
    """Q, K, V = query, key, value (+ bias), each [B, length, hidden] split into num_heads heads; with
    past_key/past_value [B, N, P, D] the new keys and values are appended (present = [past; new]);
    output = softmax(scale * Q K^T + masks + attention_bias) V. key_padding_mask marks padding keys
    (see `mask_bias`); unidirectional hides the keys after each query.
    """

    unimplemented_inputs = {8: "past_sequence_length", 9: "cache_indirection"}
    unimplemented_outputs = {3: "qk"}

    def _run(
        self,
        query,
        key=None,
        value=None,
        bias=None,
        key_padding_mask=None,
        attention_bias=None,
        past_key=None,
        past_value=None,
        past_sequence_length=None,
        cache_indirection=None,
        num_heads=None,
        unidirectional=0,
        scale=0.0,
        mask_filter_value=-10000.0,
    ):
        if key is None or key.ndim != 3:
            key_rank = None if key is None else key.ndim
            raise unsupported("MultiHeadAttention", "packed QKV/KV or a BNSH key; key rank", key_rank)
        if unidirectional and key.shape[1] != query.shape[1]:
            # onnxruntime then masks every query but the last as if keys started at the first query
            raise unsupported("MultiHeadAttention", "unidirectional with key length != query length", unidirectional)
        if bias is not None:
            query_bias, key_bias, value_bias = np.split(bias, [query.shape[-1], query.shape[-1] + key.shape[-1]])
            query, key, value = query + query_bias, key + key_bias, value + value_bias
        q = split_heads(query, num_heads)  # [B, N, S, D]
        k = split_heads(key, num_heads)  # [B, N, L, D]
        v = split_heads(value, num_heads)  # [B, N, L, Dv]
        if past_key is not None:
            k = np.concatenate([past_key, k], axis=2)  # [B, N, P + L, D]
            v = np.concatenate([past_value, v], axis=2)  # [B, N, P + L, Dv]

        output = attend_masked(
            "MultiHeadAttention", q, k, v, scale, key_padding_mask, unidirectional, mask_filter_value, attention_bias
        )  # [B, N, S, Dv]
        return self.outputs(merge_heads(output), k, v)  # [B, S, N*Dv], [B, N, T, D], [B, N, T, Dv]
