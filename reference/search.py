"""Choosing the next token of every row: the logits processors, then greedy choice or sampling.

The order is the peer's (RunStandardDecodingStep): min_length, repetition_penalty, no_repeat_ngram_size,
then gentwin's extras (presence/frequency penalties, logit_bias; off by default), then the choice.
One random number generator per Generator, carried across steps (sampling.make_rng).
"""

from __future__ import annotations

import numpy as np

from gentwin.reference import penalties, sampling
from gentwin.reference.beam_search import BeamSearch


class Search:
    process_logits = staticmethod(penalties.process_logits)
    choose_next_tokens = staticmethod(sampling.choose_next_tokens)

    def __init__(self, options: dict, config):
        self.options, self.config = options, config
        self.rng = sampling.make_rng(options["random_seed"])

    def advance(self, logits: np.ndarray, sequences):
        """Choose every row's next token from LOGITS [R, V] (changed in place by the processors) and append
        it to SEQUENCES (pad for finished rows). Returns (tokens [R], None): rows keep their order."""
        self.process_logits(logits, sequences.current(), self.options, self.config.eos_token_ids,
                            sequences.prompt_length, self.options["logit_bias"])
        tokens = self.choose_next_tokens(logits, self.options, self.rng, sequences.finished,
                                         self.config.pad_token_id)  # [R]
        sequences.append_generated(tokens)
        return tokens, None

    @staticmethod
    def is_done(sequences) -> bool:
        return sequences.done

    @staticmethod
    def returned_rows(options: dict) -> int:
        return options["batch_size"]

    @staticmethod
    def sequence(sequences, index: int) -> np.ndarray:
        return sequences.current()[index].copy()  # [length]


def create_search(options: dict, config, search=Search, beam_search=BeamSearch):
    """The search a Generator's options ask for; an engine passes its own classes."""
    if options["num_beams"] > 1:
        return beam_search(options, config)
    return search(options, config)
