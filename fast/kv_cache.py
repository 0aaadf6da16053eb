"""The key/value cache in buffers allocated once per generator, which onnxruntime reads and writes in place.

The layouts are the reference's (gentwin/reference/kv_cache.py); what changes is where the tensors live:

- shared buffer (`past_present_share_buffer`): past and present are bound to the same [B, H_kv, max_length, D]
  buffer, as the peer binds them; the attention op writes the new positions into it, so a run copies nothing.
- growing past (separate or gpt2's combined): each tensor has two flat buffers of max_length positions. The
  past [.., T, D] is the front of one, and the graph writes the present [.., T + S, D] into the front of the
  other; then they swap roles. Both are contiguous because a tensor of T positions is the first T-position-sized
  slice of a flat buffer, so growing never allocates.
- rewind and beam reorder write the kept rows or positions into the spare buffer, which becomes the current one.
"""

from __future__ import annotations

import math

import numpy as np


class KVCache:
    def __init__(self, config, rows: int, max_length: int, share_buffer: bool, dtype, device):
        decoder = config.decoder
        self.past_names, self.present_names = decoder.cache_names()
        self.share_buffer, self.max_length, self.device = share_buffer, max_length, device
        heads, head_size = decoder.num_key_value_heads, decoder.head_size
        leading = (2, rows) if decoder.combined_past else (rows,)   # gpt2: keys and values in one tensor
        self.shape_of = lambda length: (*leading, heads, length, head_size)  # [(2,) B, H, length, D]
        self.rows_axis = len(leading) - 1
        size = math.prod(self.shape_of(max_length))
        self.current = [device.zeros(size, dtype) for _ in self.past_names]  # flat, the cache as it stands
        self.spare = None if share_buffer else [device.zeros(size, dtype) for _ in self.past_names]
        self.length = 0          # positions held
        self.bound_to = None     # the buffers the binding points at, when they need no rebinding

    def _view(self, flat, length: int):
        """The tensor of LENGTH positions at the front of a flat buffer."""
        shape = self.shape_of(length)
        return flat[: math.prod(shape)].reshape(shape)              # [(2,) B, H, length, D]

    def bind(self, binding, new_tokens: int) -> None:
        """Point the graph's pasts and presents at the buffers, for a run on NEW_TOKENS more positions."""
        if self.share_buffer:
            if self.bound_to is not self.current:   # a shared buffer's address only changes on reorder
                for past, present, flat in zip(self.past_names, self.present_names, self.current):
                    whole = self._view(flat, self.max_length)                 # [B, H, max_length, D]
                    self.device.bind_input(binding, past, whole)
                    self.device.bind_output(binding, present, whole)
                self.bound_to = self.current
            return
        for past, present, flat, spare in zip(self.past_names, self.present_names, self.current, self.spare):
            self.device.bind_input(binding, past, self._view(flat, self.length))
            self.device.bind_output(binding, present, self._view(spare, self.length + new_tokens))

    def advance(self, new_tokens: int) -> None:
        """After a run: the presents written hold NEW_TOKENS more positions."""
        self.length += new_tokens
        if not self.share_buffer:
            self.current, self.spare = self.spare, self.current

    def presents(self) -> dict:
        """The last run's present tensors, by output name (views, for get_output)."""
        return {name: self._held(flat) for name, flat in zip(self.present_names, self.current)}

    def rewind(self, length: int) -> None:
        """Keep the first LENGTH positions. A shared buffer needs no copy: positions past the attention mask are
        never read and get overwritten."""
        if not self.share_buffer and 0 < length < self.length:
            for held, spare in zip(self.current, self.spare):
                self._view(spare, length)[...] = self._held(held)[..., :length, :]  # [(2,) B, H, length, D]
            self.current, self.spare = self.spare, self.current
        self.length = length

    def snapshot(self, length: int) -> list:
        """Copies of the first LENGTH positions of every past (see api.Generator.snapshot)."""
        return [self._held(flat)[..., :length, :].copy() for flat in self.current]

    def restore(self, pasts: list) -> None:
        """Hold copies of PASTS (from snapshot) as the first positions of the cache."""
        self.length = pasts[0].shape[-2]
        for flat, past in zip(self.current, pasts):
            self._held(flat)[..., : self.length, :] = past

    def _held(self, flat):
        """The tensor the graph sees as its past: the whole shared buffer, or the positions held."""
        return self._view(flat, self.max_length if self.share_buffer else self.length)

    def reorder(self, row_indices) -> None:
        """Beam search (never with a shared buffer, so the spare buffers exist): row i of the cache becomes a
        copy of row ROW_INDICES[i]."""
        rows = self.device.to_device(np.asarray(row_indices))
        for held, spare in zip(self.current, self.spare):
            self.device.xp.take(self._held(held), rows, axis=self.rows_axis, out=self._held(spare))
        self.current, self.spare = self.spare, self.current
