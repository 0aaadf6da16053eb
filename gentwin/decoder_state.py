"""What both engines' decoder states share: a KV cache and the attention mask and positions, which move together.

An engine's DecoderState (gentwin/reference/decoder.py, gentwin/fast/decoder.py) subclasses `CachedState`,
sets `kv_cache` and `positions` (gentwin.position_inputs.PositionInputs), runs the graph its own way, and
says in `forget_last_run` how to drop the last run's inputs and outputs.
"""

from __future__ import annotations

import numpy as np


class CachedState:
    kv_cache = None
    positions = None

    def rewind(self, length: int) -> None:
        """Forget every position from LENGTH on (batch size 1, or LENGTH 0)."""
        self.kv_cache.rewind(length)
        self.positions.rewind(length)

    def reorder(self, row_indices: np.ndarray) -> None:
        """Beam search: row i becomes a copy of row ROW_INDICES[i]."""
        self.kv_cache.reorder(row_indices)

    def snapshot(self) -> dict:
        """Copies of the KV cache's valid positions, the mask and the positions (see api.Generator.snapshot)."""
        return {"kv": self.kv_cache.snapshot(self.positions.length), "positions": self.positions.snapshot()}

    def restore(self, snapshot: dict) -> None:
        self.kv_cache.restore(snapshot["kv"])
        self.positions.restore(snapshot["positions"])
        self.forget_last_run()

    def forget_last_run(self) -> None:
        raise NotImplementedError
