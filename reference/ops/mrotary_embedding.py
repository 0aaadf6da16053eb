"""com.microsoft MRotaryEmbedding: RoPE over three position streams (multimodal rotary: Qwen2.5-VL, Qwen3-VL)."""

import numpy as np

from .attention_common import apply_rotary
from .contrib_op import ContribOp

SECTIONED, INTERLEAVED = 0, 1  # mrope_layout: how the three streams share the rotary columns


def stream_of_columns(mrope_section, mrope_layout, half_rotary_dim):
    """For each of the HALF_ROTARY_DIM cos/sin columns (as many as mrope_section adds up to), the position stream (0 temporal, 1 height, 2 width)
    whose position it is read at.

    Sectioned (Qwen2.5-VL): the first mrope_section[0] columns are temporal, the next mrope_section[1]
    height, then mrope_section[2] width. Interleaved (Qwen3-VL): every column is temporal but for columns
    1, 4, 7, ... (mrope_section[1] of them), height, and 2, 5, 8, ... (mrope_section[2] of them), width.
    """
    if mrope_layout == SECTIONED:
        return np.repeat(np.arange(3), mrope_section)                            # [R/2]
    streams = np.zeros(half_rotary_dim, dtype=np.int64)                       # [R/2]
    for stream in (1, 2):
        streams[stream : 3 * mrope_section[stream] : 3] = stream
    return streams


class MRotaryEmbedding(ContribOp):
    """output = rotary(input), each cos/sin column at the position of the stream that owns it.

    input is [B, S, N*D]; position_ids is [3, B, S]: each token's temporal, height and width positions (all
    three equal for text, where this is RotaryEmbedding at that position). The caches are
    [max_position, R/2]; only the first R = rotary_embedding_dim channels of each head rotate (all of them
    when it is 0). onnxruntime multiplies the cos and sin it reads by `scale`.
    """

    implemented_values = {"is_packed_batching": (0,), "mrope_layout": (SECTIONED, INTERLEAVED)}

    def _run(self, x, position_ids, cos_cache, sin_cache, mrope_section=None, mrope_layout=SECTIONED,
             interleaved=0, num_heads=0, rotary_embedding_dim=0, is_packed_batching=0, scale=1.0):
        if x.ndim != 3 or position_ids.shape != (3, *x.shape[:2]):
            raise ValueError(f"MRotaryEmbedding: input {x.shape} must be [B, S, N*D] and position_ids "
                             f"{position_ids.shape} [3, B, S]")
        batch, length, hidden = x.shape
        half = cos_cache.shape[1]
        head_size = hidden // num_heads if num_heads else 2 * half
        if np.any(position_ids < 0) or np.any(position_ids >= cos_cache.shape[0]):
            raise ValueError(f"MRotaryEmbedding: position_ids must be in [0, {cos_cache.shape[0]})")
        if sum(mrope_section) != half:
            raise ValueError(f"MRotaryEmbedding: mrope_section {list(mrope_section)} adds up to "
                             f"{sum(mrope_section)}, not {half}, half the rotary channels (onnxruntime refuses it)")
        streams = stream_of_columns(list(mrope_section), mrope_layout, half)      # [R/2]
        positions = position_ids[streams]                                        # [R/2, B, S]
        columns = np.arange(half)                                                # [R/2]
        cos = np.moveaxis(cos_cache[positions, columns[:, None, None]], 0, -1) * np.float32(scale)  # [B, S, R/2]
        sin = np.moveaxis(sin_cache[positions, columns[:, None, None]], 0, -1) * np.float32(scale)  # [B, S, R/2]
        heads = x.reshape(batch, length, hidden // head_size, head_size)         # [B, S, N, D]
        rotated = apply_rotary(heads, cos[:, :, None], sin[:, :, None], interleaved)  # [B, S, N, D]
        return (rotated.reshape(x.shape),)                                       # [B, S, N*D]
