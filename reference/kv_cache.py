"""The key/value cache: the past the decoder graph reads and the present it writes, one pair per layer.

Three layouts, all as onnxruntime-genai feeds them:
- separate past (`past_key_values.%d.key` / `.value`, [B, H_kv, S, D]) that grows: the graph returns
  present = concat(past, new) and the present becomes the next past;
- gpt2's combined past (`past_%d`, [2, B, H_kv, S, D]: keys then values), growing the same way;
- a shared buffer (`past_present_share_buffer`): past and present are one [B, H_kv, max_length, D] buffer
  that the attention op writes the new positions into; the attention mask says how much of it is valid.
"""

from __future__ import annotations

import numpy as np


class KVCache:
    def __init__(self, config, rows: int, max_length: int, share_buffer: bool, dtype=np.float32):
        decoder = config.decoder
        self.past_names, self.present_names = decoder.cache_names()
        self.share_buffer = share_buffer
        length = max_length if share_buffer else 0
        if decoder.combined_past:
            self.empty_shape = (2, rows, decoder.num_key_value_heads, length, decoder.head_size)  # [2, B, H, S, D]
        else:
            self.empty_shape = (rows, decoder.num_key_value_heads, length, decoder.head_size)     # [B, H, S, D]
        self.rows_axis = len(self.empty_shape) - 4  # the sequence axis is always second to last
        self.dtype = dtype
        self.reset()

    def reset(self) -> None:
        """Forget everything: zeroed buffers, or empty pasts."""
        self.pasts = [np.zeros(self.empty_shape, dtype=self.dtype) for _ in self.past_names]

    def feeds(self) -> dict:
        return dict(zip(self.past_names, self.pasts))

    def update(self, outputs: dict) -> None:
        """The graph's presents become the next run's pasts."""
        self.pasts = [outputs[name] for name in self.present_names]

    def rewind(self, length: int) -> None:
        """Keep the first LENGTH positions."""
        if length == 0:
            self.reset()
        elif not self.share_buffer:
            # A shared buffer needs nothing: positions past the mask are never read and get overwritten.
            self.pasts = [past[..., :length, :] for past in self.pasts]

    def snapshot(self, length: int) -> list[np.ndarray]:
        """Copies of the first LENGTH positions of every past."""
        return [past[..., :length, :].copy() for past in self.pasts]

    def restore(self, pasts: list[np.ndarray]) -> None:
        """Hold copies of PASTS (from snapshot) as the first positions of the cache."""
        self.reset()
        if self.share_buffer:
            for buffer, past in zip(self.pasts, pasts):
                buffer[..., : past.shape[-2], :] = past
        else:
            self.pasts = [past.copy() for past in pasts]

    def reorder(self, row_indices: np.ndarray) -> None:
        """Beam search: row i of the cache becomes a copy of row ROW_INDICES[i]."""
        self.pasts = [np.take(past, row_indices, axis=self.rows_axis) for past in self.pasts]
