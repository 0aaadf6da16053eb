"""One layer's cache (gentwin/decoder_state.py's LayerCache) in buffers allocated once per generator, which
onnxruntime reads and writes in place.

The two ways are the reference's (gentwin/reference/kv_cache.py); what changes is where the tensors live:

- `SwappedCache` (a growing KV past, gpt2's combined one, a conv or recurrent state): each tensor has two flat
  buffers, big enough for max_length positions. The past [.., T, D] is the front of one, and the graph writes
  the present [.., T + S, D] into the front of the other; then they swap roles. Both are contiguous because a
  tensor of T positions is the first T-position-sized slice of a flat buffer, so growing never allocates. A
  conv or recurrent state keeps one shape, so it simply alternates between its two buffers.
- `SharedBuffer` (`past_present_share_buffer`, or a windowed cache): past and present are bound to the same
  buffer of the layer's capacity, as the peer binds them; the attention op writes the new positions into it
  (and evicts from a windowed one), so a run copies nothing.
- rewind and beam reorder of a swapped cache write the kept rows or positions into the spare buffer, which
  becomes the current one.
"""

from __future__ import annotations

import math

import numpy as np

from gentwin.decoder_state import LayerCache


class SwappedCache:
    def __init__(self, spec: LayerCache, device):
        self.spec, self.device = spec, device
        size = math.prod(spec.shape_of(spec.capacity or spec.max_length))
        self.current = [device.zeros(size, spec.dtype) for _ in spec.past_names]  # flat, the cache as it stands
        self.spare = self._spare_buffers(size)
        self.length = 0          # positions held

    def _spare_buffers(self, size: int):
        return [self.device.zeros(size, self.spec.dtype) for _ in self.spec.past_names]

    def _view(self, flat, positions: int):
        """The tensor of POSITIONS positions at the front of a flat buffer."""
        shape = self.spec.shape_of(positions)
        return flat[: math.prod(shape)].reshape(shape)              # [(2,) B, H, positions, D] or [B, C, K - 1]

    def _held(self, flat):
        """The tensor the graph sees as its past."""
        return self._view(flat, self.length)

    def bind(self, binding, new_tokens: int) -> None:
        """Point the graph's pasts and presents at the buffers, for a run on NEW_TOKENS more positions."""
        for past, present, flat, spare in zip(self.spec.past_names, self.spec.present_names, self.current, self.spare):
            self.device.bind_input(binding, past, self._view(flat, self.length))
            self.device.bind_output(binding, present, self._view(spare, self.length + new_tokens))

    def advance(self, new_tokens: int) -> None:
        """After a run: the presents written hold NEW_TOKENS more positions."""
        self.length += new_tokens
        self.current, self.spare = self.spare, self.current

    def pasts(self) -> dict:
        """The past tensors the next run reads, by input name (views, for the run log)."""
        return {name: self._held(flat) for name, flat in zip(self.spec.past_names, self.current)}

    def presents(self) -> dict:
        """The last run's present tensors, by output name (views, for get_output)."""
        return {name: self._held(flat) for name, flat in zip(self.spec.present_names, self.current)}

    def rewind(self, length: int) -> None:
        """Keep the first LENGTH positions (LayerCache.check_rewind has refused what cannot be kept); a fixed
        state rewound to 0 is zeroed, as the sequence starts again."""
        if length == 0 and self.spec.fixed_shape:
            for flat in self.current:
                flat[...] = 0
        if 0 < length < self.length:
            for held, spare in zip(self.current, self.spare):
                self._view(spare, length)[...] = self._held(held)[..., :length, :]  # [(2,) B, H, length, D]
            self.current, self.spare = self.spare, self.current
        self.length = length

    def snapshot(self, length: int) -> list:
        """Copies of what every past holds after LENGTH positions (see api.Generator.snapshot)."""
        return [self.spec.held(self._held(flat), length).copy() for flat in self.current]

    def restore(self, pasts: list) -> None:
        """Hold copies of PASTS (from snapshot) as the first positions of the cache."""
        self.length = pasts[0].shape[-2]
        for flat, past in zip(self.current, pasts):
            self.spec.held(self._held(flat), self.length)[...] = past

    def reorder(self, row_indices) -> None:
        """Beam search: row i of the cache becomes a copy of row ROW_INDICES[i]. (A shared buffer never
        reorders: beam search grows its past, and a windowed cache refuses beams.)"""
        rows = self.device.to_device(np.asarray(row_indices))
        for held, spare in zip(self.current, self.spare):
            self.device.xp.take(self._held(held), rows, axis=self.spec.rows_axis, out=self._held(spare))
        self.current, self.spare = self.spare, self.current


class SharedBuffer(SwappedCache):
    def __init__(self, spec: LayerCache, device):
        super().__init__(spec, device)
        self.bound = False       # whether the binding points at the buffers: they never move

    def _spare_buffers(self, size: int):
        return None

    def _held(self, flat):
        return self._view(flat, self.spec.capacity)                                     # [(2,) B, H, capacity, D]

    def bind(self, binding, new_tokens: int) -> None:
        if not self.bound:
            for past, present, flat in zip(self.spec.past_names, self.spec.present_names, self.current):
                self.device.bind_input(binding, past, self._held(flat))
                self.device.bind_output(binding, present, self._held(flat))
            self.bound = True

    def advance(self, new_tokens: int) -> None:
        self.length += new_tokens

    def rewind(self, length: int) -> None:
        """No copy: positions past the attention mask are never read and get overwritten."""
        self.length = length

    def restore(self, pasts: list) -> None:
        self.length = pasts[0].shape[-2]
        for flat, past in zip(self.current, pasts):
            self._held(flat)[..., : past.shape[-2], :] = past


def layer_cache(spec: LayerCache, device) -> SwappedCache:
    return SharedBuffer(spec, device) if spec.capacity is not None else SwappedCache(spec, device)
