"""What both engines' decoder states share: a KV cache and the attention mask and positions, which move together.

An engine's DecoderState (gentwin/reference/decoder.py, gentwin/fast/decoder.py) subclasses `CachedState`,
sets `kv_cache`, feeds `position_feeds` and the cache to the graph its own way, and says in `forget_last_run`
how to drop the last run's inputs and outputs. Its graph has `input_types`: {input name: numpy dtype}.
"""

from __future__ import annotations

import numpy as np

from gentwin.position_inputs import PositionInputs


class CachedState:
    kv_cache = None

    def __init__(self, graph, config, batch_size: int):
        self.graph, self.config = graph, config
        names = config.decoder.input_names
        self.position_input_names = names["input_ids"], names["attention_mask"], names["position_ids"]
        self.past_dtype = graph.input_types[config.decoder.past_names(0)[0]]
        self.positions = PositionInputs(config.pad_token_id, batch_size)

    def position_feeds(self, input_ids: np.ndarray) -> dict:
        """input_ids, attention_mask and position_ids (gentwin.position_inputs) for a run on INPUT_IDS [R, S],
        those the graph takes, by name."""
        mask, positions = self.positions.next(input_ids)                                    # [R, T], [R, S]
        feeds = dict(zip(self.position_input_names, (input_ids, mask, positions)))
        return {name: value for name, value in feeds.items() if name in self.graph.input_types}

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
