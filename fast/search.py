"""Choosing the next token of every row, as gentwin/reference/search.py does, where the logits are: on the
host, or on the GPU under CUDA. The logits processors (fast/penalties.py) and the sampler (fast/sampling.py)
run there and bring only a few columns and the chosen tokens to the host. Beam search is the reference's,
on host logits: its log-softmax over every beam's row is the reference's float32 arithmetic.
"""

from __future__ import annotations

import functools

from gentwin.devices import to_host
from gentwin.fast import penalties, sampling
from gentwin.reference import beam_search
from gentwin.reference import search as reference_search


class Search(reference_search.Search):
    process_logits = staticmethod(penalties.process_logits)
    choose_next_tokens = staticmethod(sampling.choose_next_tokens)


class BeamSearch(beam_search.BeamSearch):
    def advance(self, logits, sequences):
        return super().advance(to_host(logits), sequences)


create_search = functools.partial(reference_search.create_search, search=Search, beam_search=BeamSearch)
