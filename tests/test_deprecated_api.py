"""The 0.5.2-style calls still work, with a DeprecationWarning that says what to call instead."""

from __future__ import annotations

import pytest

import gentwin.reference as og
from tests.conftest import FIXTURE_MODELS, load


def _run(old_style: bool):
    model = load("gentwin.reference", str(FIXTURE_MODELS / "llama-fp32"))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=12)
    if old_style:
        with pytest.warns(DeprecationWarning, match="generator.append_tokens"):
            params.input_ids = [[5, 17, 42]]
    generator = og.Generator(model, params)
    if not old_style:
        generator.append_tokens([[5, 17, 42]])
    while not generator.is_done():
        if old_style:
            with pytest.warns(DeprecationWarning, match="just drop the call"):
                generator.compute_logits()
        generator.generate_next_token()
    return list(generator.get_sequence(0))


def test_params_input_ids_and_compute_logits_give_the_same_stream():
    assert _run(old_style=True) == _run(old_style=False)
