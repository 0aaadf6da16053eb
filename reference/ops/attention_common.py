"""Pieces shared by the attention kernels: head layout, rotary embedding, masking and softmax attention.

Shapes: B batch, S query length, T key length, N heads, D head size, R rotary dimension.
"""

import numpy as np


def split_heads(x, num_heads):
    """[B, S, N*D] -> [B, N, S, D]."""
    batch, length, hidden = x.shape
    return x.reshape(batch, length, num_heads, hidden // num_heads).transpose(0, 2, 1, 3)  # [B, N, S, D]


def merge_heads(x):
    """[B, N, S, D] -> [B, S, N*D]."""
    batch, num_heads, length, head_size = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, length, num_heads * head_size)  # [B, S, N*D]


def repeat_kv_heads(x, num_heads):
    """Grouped-query attention: query head h reads key/value head h // (num_heads // kv_num_heads)."""
    return np.repeat(x, num_heads // x.shape[1], axis=1)  # [B, N, T, D]


def apply_rotary(x, cos, sin, interleaved):
    """Rotate the first R = 2 * cos.shape[-1] channels of x by the angles whose cos/sin are given.

    x is [..., D]; cos and sin are [..., R/2] and broadcast against x's leading dimensions. Pairs are
    (i, i + R/2) by default, and adjacent channels (2i, 2i + 1) when interleaved; channels from R on
    pass through unchanged (partial rotary).
    """
    rotary_dim = 2 * cos.shape[-1]
    rotated, passed = x[..., :rotary_dim], x[..., rotary_dim:]
    if interleaved:
        first, second = rotated[..., 0::2], rotated[..., 1::2]  # [..., R/2] each
        pairs = np.stack([first * cos - second * sin, second * cos + first * sin], axis=-1)  # [..., R/2, 2]
        rotated = pairs.reshape(rotated.shape)  # [..., R]
    else:
        first, second = rotated[..., : rotary_dim // 2], rotated[..., rotary_dim // 2 :]  # [..., R/2] each
        rotated = np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)  # [..., R]
    return np.concatenate([rotated, passed], axis=-1).astype(x.dtype, copy=False)  # [..., D]


def causal_mask(query_positions, key_length, window=-1):
    """True where a query at absolute position p may attend key j: j <= p, and p - j < window unless window < 0.

    query_positions is [..., S] (absolute positions of the queries); the result is [..., S, T].
    """
    key_positions = np.arange(key_length)
    distance = query_positions[..., None] - key_positions  # [..., S, T]
    allowed = distance >= 0
    if window >= 0:
        allowed &= distance < window
    return allowed


def padding_mask(op_type, mask, batch, total_length):
    """True where a key may be attended, from an attention/key-padding mask in one of the formats the
    Attention and MultiHeadAttention kernels share -> [B, 1, 1 or S, T]:
      * raw 0/1 mask [B, T] or [B, S, T] (a key is valid where the mask is > 0);
      * right-padding lengths [B] (keys 0..length-1 are valid).
    """
    if mask.ndim == 2:
        return (mask > 0)[:, None, None, :]  # [B, 1, 1, T]
    if mask.ndim == 3:
        return (mask > 0)[:, None]  # [B, 1, S, T]
    if mask.shape == (batch,):
        return (np.arange(total_length) < mask[:, None])[:, None, None, :]  # [B, 1, 1, T]
    raise NotImplementedError(f"{op_type}: mask of shape {mask.shape} is not supported by gentwin.reference.")


def softmax(scores, sink=None):
    """Softmax over the last axis. `sink` ([..., 1], broadcastable) is an extra logit that only enlarges the
    denominator (attention sinks / smooth softmax). A row that is -inf throughout (no key may be
    attended) gets zero weights, which is what onnxruntime's GroupQueryAttention outputs for it."""
    peak = scores.max(axis=-1, keepdims=True)
    if sink is not None:
        peak = np.maximum(peak, sink)
    peak = np.where(np.isneginf(peak), 0, peak)
    weights = np.exp(scores - peak)
    total = weights.sum(axis=-1, keepdims=True)
    if sink is not None:
        total = total + np.exp(sink - peak)
    return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)


def attend(query, key, value, scale, bias=None, softcap=0.0, sink=None):
    """softmax(softcap(scale * Q K^T) + bias) V for Q [B, N, S, D] and K, V [B, N, T, D] -> [B, N, S, Dv].

    A scale of 0 (the ops' attribute default) means 1 / sqrt(D). bias broadcasts to [B, N, S, T] and carries
    the masks: -inf (or a large negative filter value) where attention is not allowed.
    """
    scale = scale if scale != 0 else 1 / np.sqrt(query.shape[-1])
    scores = np.matmul(query, key.swapaxes(-1, -2)) * np.float32(scale)  # [B, N, S, T]
    if softcap > 0:
        scores = np.float32(softcap) * np.tanh(scores / np.float32(softcap))
    if bias is not None:
        scores = scores + bias
    return np.matmul(softmax(scores, sink), value).astype(query.dtype, copy=False)  # [B, N, S, Dv]


def attend_masked(op_type, query, key, value, scale, mask, unidirectional, mask_filter_value, attention_bias):
    """attend() under the Attention and MultiHeadAttention kernels' masks (mask_bias) plus attention_bias."""
    batch, _, length, _ = query.shape
    bias = mask_bias(op_type, mask, unidirectional, batch, length, key.shape[2], mask_filter_value)  # [B, 1, S, T]
    if attention_bias is not None:
        bias = bias + attention_bias  # [B, N, S, T]
    return attend(query, key, value, scale, bias)  # [B, N, S, Dv]


def additive_mask(allowed, filter_value=-np.inf):
    """0 where `allowed`, `filter_value` elsewhere, in float32."""
    return np.where(allowed, np.float32(0), np.float32(filter_value))


def mask_bias(op_type, mask, unidirectional, batch, length, total_length, mask_filter_value):
    """The additive score bias [B, 1, S, T] of the Attention and MultiHeadAttention kernels.

    Keys the padding mask rules out get mask_filter_value; when unidirectional, keys after the query
    (query s sits at position T - S + s) get the lowest float32 instead, as in onnxruntime, so that
    with a small filter value a row of padding only still attends nothing but its past.
    """
    bias = np.zeros((batch, 1, length, total_length), np.float32)  # [B, 1, S, T]
    if mask is not None:
        bias = bias + additive_mask(padding_mask(op_type, mask, batch, total_length), mask_filter_value)
    if unidirectional:
        future = ~causal_mask(total_length - length + np.arange(length), total_length)  # [S, T]
        bias = np.where(future, np.finfo(np.float32).min, bias)
    return bias
