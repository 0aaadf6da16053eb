"""The token sequences of a Generator: what has been appended or generated, and which rows have finished."""

from __future__ import annotations

import numpy as np

from gentwin import logging_options as run_log
from gentwin.errors import ArgumentValueError


def right_padded(rows, pad_token_id: int) -> np.ndarray:
    """Token rows of different lengths as one int32 [len(rows), longest] array, padded on the right."""
    batch = np.full((len(rows), max(len(row) for row in rows)), pad_token_id, np.int32)  # [B, longest]
    for batch_row, row in zip(batch, rows):
        batch_row[: len(row)] = row
    return batch


def check_vocabulary_range(ids, vocab_size: int, what: str) -> None:
    """Every token id in IDS (the argument WHAT) must be in [0, vocab_size); the first that is not is named."""
    ids = np.asarray(ids)
    outside = (ids < 0) | (ids >= vocab_size)
    if outside.any():
        raise ArgumentValueError(f"{what}: token id {int(ids[outside].flat[0])} is outside the vocabulary "
                                 f"[0, {vocab_size})")


class Sequences:
    """Tokens of every row in one [rows, max_length] buffer, as the peer keeps them.

    A row finishes when it generates an EOS token; from then on it is given pad tokens. Tokens appended by
    the caller never finish a row, even EOS ones (the peer resets that state after every append). Like the
    peer, the token that finishes the last unfinished row is not kept: the sequences end before it.
    """

    def __init__(self, rows: int, max_length: int, eos_token_ids: list[int]):
        self.tokens = np.zeros((rows, max_length), dtype=np.int32)  # [R, max_length]
        self.length = 0
        self.prompt_length = 0  # where the tokens generated since the last append begin
        self.eos_token_ids = np.asarray(eos_token_ids, dtype=np.int32)
        self.finished = np.zeros(rows, dtype=bool)                  # [R]

    @property
    def max_length(self) -> int:
        return self.tokens.shape[1]

    def current(self) -> np.ndarray:
        return self.tokens[:, : self.length]                        # [R, length]

    def append_prompt(self, tokens: np.ndarray) -> None:
        new = tokens.shape[1]
        self.tokens[:, self.length : self.length + new] = tokens
        self.length += new
        self.prompt_length = self.length
        self.finished[:] = False

    def append_generated(self, tokens: np.ndarray) -> None:
        finished = self.finished | (tokens[:, None] == self.eos_token_ids).any(axis=1)  # [R]
        if run_log.wanted("hit_eos"):
            for row in np.flatnonzero(finished & ~self.finished):
                run_log.write("hit_eos", f"EOS seen on batch {row}")
        self.finished = finished
        if not self.all_finished:
            self.tokens[:, self.length] = tokens
            self.length += 1

    def append_to_beams(self, tokens: np.ndarray, row_order: np.ndarray) -> None:
        """Beam search: row i takes the history of row ROW_ORDER[i], then TOKENS[i]. Beams never finish
        here: the search keeps its own hypotheses."""
        self.tokens[:] = self.tokens[row_order]                     # [R, max_length]
        self.tokens[:, self.length] = tokens
        self.length += 1

    @property
    def all_finished(self) -> bool:
        return bool(self.finished.all())

    @property
    def done(self) -> bool:
        return self.all_finished or self.length == self.max_length

    def rewind(self, length: int) -> None:
        self.length = length
        self.prompt_length = min(self.prompt_length, length)
        self.finished[:] = False
