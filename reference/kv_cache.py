"""One layer's cache (gentwin/decoder_state.py's LayerCache) as numpy arrays: what the graph reads as its
past, and how its present becomes the next past.

Two ways, as onnxruntime-genai feeds them:
- `SwappedCache`: the present is a new tensor that replaces the past. A KV cache's past grows
  ([B, H_kv, T, D], gpt2's combined [2, B, H_kv, T, D]; present = concat(past, new)); a conv state keeps its
  shape ([B, C, K - 1]: the last K - 1 inputs of the layer's convolution), and so does a linear-attention
  layer's recurrent state ([B, H, Dk, Dv]).
- `SharedBuffer`: past and present are one buffer of fixed positions that the attention op writes into: the
  max_length buffer of `past_present_share_buffer`, where the attention mask says how much is valid, or a
  windowed cache's few slots, which GroupQueryAttention fills and evicts from itself.
"""

from __future__ import annotations

import numpy as np

from gentwin.decoder_state import LayerCache


class SwappedCache:
    def __init__(self, spec: LayerCache):
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        """Forget everything: empty pasts, or a zeroed conv or recurrent state (the sequence starts here)."""
        self.pasts = [np.zeros(self.spec.shape_of(0), self.spec.dtype) for _ in self.spec.past_names]

    def feeds(self) -> dict:
        return dict(zip(self.spec.past_names, self.pasts))

    def update(self, outputs: dict) -> None:
        """The graph's presents become the next run's pasts."""
        self.pasts = [outputs[name] for name in self.spec.present_names]

    def rewind(self, length: int) -> None:
        """Keep the first LENGTH positions (LayerCache.check_rewind has refused what cannot be kept)."""
        if length == 0:
            self.reset()
        else:
            self.pasts = [past[..., :length, :] for past in self.pasts]                # [.., length, D]

    def snapshot(self, length: int) -> list[np.ndarray]:
        """Copies of what every past holds after LENGTH positions."""
        return [self.spec.held(past, length).copy() for past in self.pasts]

    def restore(self, pasts: list[np.ndarray]) -> None:
        """Hold copies of PASTS (from snapshot)."""
        self.pasts = [past.copy() for past in pasts]

    def reorder(self, row_indices: np.ndarray) -> None:
        """Beam search: row i of the cache becomes a copy of row ROW_INDICES[i]."""
        self.pasts = [np.take(past, row_indices, axis=self.spec.rows_axis) for past in self.pasts]


class SharedBuffer(SwappedCache):
    def reset(self) -> None:
        """Zeroed buffers of the layer's capacity."""
        self.pasts = [np.zeros(self.spec.shape_of(self.spec.capacity), self.spec.dtype) for _ in self.spec.past_names]

    def rewind(self, length: int) -> None:
        """Nothing to do: positions past the attention mask are never read and get overwritten."""

    def restore(self, pasts: list[np.ndarray]) -> None:
        """Hold copies of PASTS (from snapshot) as the first positions of the buffers."""
        self.reset()
        for buffer, past in zip(self.pasts, pasts):
            buffer[..., : past.shape[-2], :] = past


def layer_cache(spec: LayerCache) -> SwappedCache:
    return SharedBuffer(spec) if spec.capacity is not None else SwappedCache(spec)
