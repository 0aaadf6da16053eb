"""com.microsoft GroupQueryAttention: causal self-attention with fewer key/value heads than query heads,
rotary embedding and a key/value cache, as onnxruntime's CPU kernel computes it.

Cache semantics (they are the contract with the decode loop):
  * seqlens_k[b] + 1 is the number of valid tokens of row b once this step's tokens are added
    (past + new); total_sequence_length is the largest of those (the attention mask's width).
  * First prompt (sequence_length == total_sequence_length): every row starts at cache slot 0, its
    valid tokens first (right padding). Query i attends to keys 0..i but never to a key at or past
    its row's valid length, so padding queries still get (meaningless) outputs.
  * Later steps (token generation, or a "subsequent prompt" of several tokens, batch 1 only): row
    b's new tokens go to slots past_b.. with past_b = seqlens_k[b] + 1 - sequence_length, whatever
    the past holds beyond that.
  * The rotary position of a token is its cache slot.
  * present_key/value have max(total_sequence_length, past cache length) slots: [0, past_b) copied
    from the past, the new tokens at [past_b, past_b + S), zeros after. Feeding a max-length past
    (onnxruntime-genai's shared buffer) therefore keeps the shape; an exactly-sized past grows by S.
"""

import numpy as np

from .attention_common import (
    additive_mask,
    apply_rotary,
    attend,
    causal_mask,
    merge_heads,
    repeat_kv_heads,
    split_heads,
)
from .contrib_op import ContribOp, unsupported


class GroupQueryAttention(ContribOp):
    """output = softmax(softcap(scale * Q K^T) + mask + attention_bias) V per query head, K and V being
    the cached keys and values of its group; local_window_size >= 0 keeps only the last that many keys
    (the query's own included), and head_sink / smooth_softmax add an extra logit to the denominator.
    A query with no key left to attend outputs zeros."""

    def _run(
        self,
        query,
        key=None,
        value=None,
        past_key=None,
        past_value=None,
        seqlens_k=None,
        total_sequence_length=None,
        cos_cache=None,
        sin_cache=None,
        position_ids=None,
        attention_bias=None,
        head_sink=None,
        k_scale=None,
        v_scale=None,
        q_norm_weight=None,
        k_norm_weight=None,
        num_heads=None,
        kv_num_heads=None,
        scale=0.0,
        softcap=0.0,
        local_window_size=-1,
        do_rotary=0,
        rotary_interleaved=0,
        smooth_softmax=0,
        qk_output=0,
        causal=1,
        sliding_window_cache=0,
        k_quant_type="NONE",
        v_quant_type="NONE",
        kv_cache_bit_width=0,
        qk_norm_epsilon=1e-6,
    ):
        self._reject_unsupported(
            position_ids, k_scale, v_scale, q_norm_weight, k_norm_weight, past_key,
            qk_output, causal, sliding_window_cache, k_quant_type, v_quant_type, kv_cache_bit_width,
        )  # fmt: skip
        batch, new_length, _ = query.shape
        if key is None:  # packed QKV: [B, S, (N + 2 Nkv) * D]
            head_size = query.shape[2] // (num_heads + 2 * kv_num_heads)
            query, key, value = np.split(
                query, [num_heads * head_size, (num_heads + kv_num_heads) * head_size], axis=-1
            )
        q = split_heads(query, num_heads)  # [B, N, S, D]
        k = split_heads(key, kv_num_heads)  # [B, Nkv, S, D]
        v = split_heads(value, kv_num_heads)  # [B, Nkv, S, D]

        valid_lengths = seqlens_k.astype(np.int64) + 1  # [B], past + new valid tokens per row
        total_length = int(np.asarray(total_sequence_length).reshape(-1)[0])
        first_prompt = self._is_first_prompt(batch, new_length, total_length)
        past_lengths = np.zeros_like(valid_lengths) if first_prompt else valid_lengths - new_length  # [B]
        positions = past_lengths[:, None] + np.arange(new_length)  # [B, S], cache slot of each new token

        if do_rotary:
            if cos_cache is None or sin_cache is None:
                raise ValueError("GroupQueryAttention: do_rotary=1 needs cos_cache and sin_cache.")
            cos = cos_cache[positions][:, None]  # [B, 1, S, R/2]
            sin = sin_cache[positions][:, None]  # [B, 1, S, R/2]
            q = apply_rotary(q, cos, sin, rotary_interleaved)
            k = apply_rotary(k, cos, sin, rotary_interleaved)

        cache_length = 0 if past_key is None else past_key.shape[2]
        present_length = max(total_length, cache_length)
        if positions.max() >= present_length:
            raise ValueError(
                f"GroupQueryAttention: new tokens reach cache position {positions.max()} but present holds "
                f"{present_length} (seqlens_k={seqlens_k.tolist()}, total_sequence_length={total_length})."
            )
        present_key = self._update_cache(past_key, k, past_lengths, positions, present_length)  # [B, Nkv, P, D]
        present_value = self._update_cache(past_value, v, past_lengths, positions, present_length)  # [B, Nkv, P, D]

        allowed = causal_mask(positions, present_length, local_window_size)  # [B, S, P]
        allowed &= np.arange(present_length) < valid_lengths[:, None, None]  # only matters to first-prompt padding
        allowed = allowed[:, None]  # [B, 1, S, P]
        bias = additive_mask(allowed)  # [B, 1, S, P]
        if attention_bias is not None:  # [B or 1, N or 1, S, total]; keys past `total` are masked anyway
            width = present_length - attention_bias.shape[-1]
            bias = bias + np.pad(attention_bias, [(0, 0)] * 3 + [(0, width)])
        sink = None
        if head_sink is not None:
            sink = head_sink.reshape(1, num_heads, 1, 1)
        elif smooth_softmax == 1:
            sink = np.zeros((1, 1, 1, 1), np.float32)

        output = attend(
            q,
            repeat_kv_heads(present_key, num_heads),  # [B, N, P, D]
            repeat_kv_heads(present_value, num_heads),  # [B, N, P, D]
            scale,
            bias,
            softcap,
            sink,
        )  # [B, N, S, D]
        return merge_heads(output), present_key, present_value  # [B, S, N*D], [B, Nkv, P, D] x2

    @staticmethod
    def _is_first_prompt(batch, new_length, total_length):
        """The prompt of an empty cache, as opposed to token generation or a 'subsequent prompt'."""
        if new_length > 1 and new_length != total_length:  # appending several tokens to a cache
            if batch != 1:
                raise ValueError("GroupQueryAttention: sequence_length > 1 with a past needs batch_size 1.")
            return False
        return new_length == total_length

    @staticmethod
    def _update_cache(past, new, past_lengths, positions, present_length):
        """Copy each row's valid past (its first past_b positions) and write the new tokens after it."""
        batch, heads, _, head_size = new.shape
        present = np.zeros((batch, heads, present_length, head_size), new.dtype)  # [B, Nkv, P, D]
        if past is not None:
            kept = np.arange(past.shape[2]) < past_lengths[:, None]  # [B, L]
            present[:, :, : past.shape[2]] = np.where(kept[:, None, :, None], past, 0)
        rows = np.arange(batch)[:, None]  # [B, 1]
        present[rows, :, positions] = new.transpose(0, 2, 1, 3)  # indexed view is [B, S, Nkv, D]
        return present

    @staticmethod
    def _reject_unsupported(
        position_ids, k_scale, v_scale, q_norm_weight, k_norm_weight, past_key,
        qk_output, causal, sliding_window_cache, k_quant_type, v_quant_type, kv_cache_bit_width,
    ):  # fmt: skip
        op = "GroupQueryAttention"
        for name, tensor in [
            ("position_ids", position_ids),
            ("k_scale", k_scale),
            ("v_scale", v_scale),
            ("q_norm_weight", q_norm_weight),
            ("k_norm_weight", k_norm_weight),
        ]:
            if tensor is not None:
                raise unsupported(op, "input", name)
        if past_key is not None and past_key.dtype.kind != "f":
            raise unsupported(op, "quantized past_key dtype", str(past_key.dtype))
        for name, attribute, default in [
            ("qk_output", qk_output, 0),
            ("causal", causal, 1),
            ("sliding_window_cache", sliding_window_cache, 0),
            ("k_quant_type", k_quant_type, "NONE"),
            ("v_quant_type", v_quant_type, "NONE"),
            ("kv_cache_bit_width", kv_cache_bit_width, 0),
        ]:
            if attribute != default:
                raise unsupported(op, name, attribute)
