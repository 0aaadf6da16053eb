"""com.microsoft RotaryEmbedding: rotate query or key channels by position-dependent angles (RoPE)."""

import numpy as np

from .attention_common import apply_rotary
from .contrib_op import ContribOp, unsupported


class RotaryEmbedding(ContribOp):
    """output = rotary(input) with cos/sin rows picked by position.

    input is [B, S, N*D] or [B, N, S, D]; position_ids is [B, S], or [1] holding the position of the
    first token (then token s sits at position_ids[0] + s). Only the first rotary_embedding_dim
    channels of each head rotate (all of them when it is 0); the caches are [max_position, R/2].
    The `scale` attribute only matters to kernels that regenerate the caches, which onnxruntime's
    CPU kernel never does, so it changes nothing.
    """

    implemented_values = {"is_packed_batching": (0,)}

    def _run(
        self,
        x,
        position_ids,
        cos_cache,
        sin_cache,
        interleaved=0,
        num_heads=0,
        rotary_embedding_dim=0,
        is_packed_batching=0,
        scale=1.0,
    ):
        if position_ids.ndim > 2:
            # e.g. the [3, B, S] positions of a multimodal rotary, which MRotaryEmbedding takes
            raise ValueError(f"RotaryEmbedding: Input 'position_ids' is expected to have 0, 1, or 2 dimensions, "
                             f"got {position_ids.ndim}")
        if x.ndim == 4:
            batch, _, length, head_size = x.shape
        else:
            batch, length, hidden = x.shape
            head_size = hidden // num_heads if num_heads else 2 * cos_cache.shape[1]
        rotary_dim = rotary_embedding_dim or head_size
        if cos_cache.shape[1] * 2 != rotary_dim:
            # onnxruntime's CPU kernel steps through a wider cache with a stride of rotary_dim / 2,
            # i.e. it reads the wrong rows; refuse rather than pick either behaviour
            what = f"cos_cache width for rotary dimension {rotary_dim}"
            raise unsupported("RotaryEmbedding", what, cos_cache.shape[1])

        if position_ids.size == 1:
            positions = position_ids.reshape(1, 1) + np.arange(length)  # [1, S]
        else:
            positions = position_ids  # [B, S]
        cos = cos_cache[positions]  # [B or 1, S, R/2]
        sin = sin_cache[positions]  # [B or 1, S, R/2]

        if x.ndim == 4:
            return (apply_rotary(x, cos[:, None], sin[:, None], interleaved),)  # [B, N, S, D]
        heads = x.reshape(batch, length, hidden // head_size, head_size)  # [B, S, N, D]
        rotated = apply_rotary(heads, cos[:, :, None], sin[:, :, None], interleaved)  # [B, S, N, D]
        return (rotated.reshape(x.shape),)  # [B, S, N*D]
