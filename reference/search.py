"""Choosing the next token of every row from its logits.

Greedy search takes the arg-max (the first one on ties, like std::max_element). Rows that have finished
are skipped: they get pad tokens from the caller and consume no random numbers.
"""

from __future__ import annotations

import numpy as np


class GreedySearch:
    def __init__(self, options: dict, config):
        self.options, self.config = options, config

    def choose(self, logits: np.ndarray, sequences) -> np.ndarray:
        """LOGITS [R, V] -> next token of every row, [R]."""
        return np.argmax(logits, axis=-1).astype(np.int32)  # [R]

    @staticmethod
    def returned_rows(options: dict) -> int:
        return options["batch_size"]

    @staticmethod
    def sequence(sequences, index: int) -> np.ndarray:
        return sequences.current()[index].copy()  # [length]


def create_search(options: dict, config):
    return GreedySearch(options, config)
