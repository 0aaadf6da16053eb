"""Choosing the next token of every row, as gentwin/reference/search.py does, where the logits are: on the
host, or on the GPU under CUDA. The logits processors (fast/penalties.py) and the sampler (fast/sampling.py)
run there and bring only a few columns and the chosen tokens to the host. Beam search is the reference's,
on host logits: its log-softmax over every beam's row is the reference's float32 arithmetic.
"""

from __future__ import annotations

import functools

import numpy as np

from gentwin.devices import to_host
from gentwin.fast import penalties, sampling
from gentwin.reference import beam_search
from gentwin.reference import penalties as reference_penalties
from gentwin.reference import search as reference_search
from gentwin.search_options import sampling_method


class Search(reference_search.Search):
    """The reference's search, with the options read once rather than on every step: whether to choose
    greedily, and from which length on every processor leaves the logits alone (at their defaults, once
    min_length is reached), so that such a step calls none of them."""

    def __init__(self, options: dict, config):
        super().__init__(options, config)
        self.greedy = sampling_method(options) == "greedy"
        # all_at_defaults as the sequence grows: only min_length depends on its length
        idle = reference_penalties.all_at_defaults(options, options["min_length"], options["logit_bias"])
        self.processors_idle_from = options["min_length"] if idle else None  # None: some processor always works

    def process_logits(self, logits, sequences, *arguments) -> None:
        if self.processors_idle_from is None or sequences.shape[1] < self.processors_idle_from:
            penalties.process_logits(logits, sequences, *arguments)

    def choose_next_tokens(self, logits, options: dict, rng, finished, pad_token_id: int) -> np.ndarray:
        if self.greedy:
            return sampling.greedy_tokens(logits, finished, pad_token_id)
        return sampling.choose_next_tokens(logits, options, rng, finished, pad_token_id)


class BeamSearch(beam_search.BeamSearch):
    def advance(self, logits, sequences):
        return super().advance(to_host(logits), sequences)


create_search = functools.partial(reference_search.create_search, search=Search, beam_search=BeamSearch)
