"""Choosing the next token of every row, as gentwin/reference/search.py does, with fast/sampling.py's
vectorised sampler. The logits processors and beam search are the reference's: they are numpy already."""

from __future__ import annotations

from gentwin.fast import sampling
from gentwin.reference import search as reference_search
from gentwin.reference.beam_search import BeamSearch


class Search(reference_search.Search):
    choose_next_tokens = staticmethod(sampling.choose_next_tokens)


def create_search(options: dict, config):
    if options["num_beams"] > 1:
        return BeamSearch(options, config)
    return Search(options, config)
