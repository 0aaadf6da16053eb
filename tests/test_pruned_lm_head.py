"""The builder's prune_lm_head=1 (gentwin.fixtures.layouts' llama-pruned-fp32): the LM head reads the final
norm at the run's last position only, so the graph's logits are [batch, 1, vocab] after a prompt too. Both
engines live against onnxruntime-genai 0.18.0, which reads such logits where they are (Model::IsPruned): in a
right-padded batch, at a padded row's last position, a pad's.
"""

from __future__ import annotations

import numpy as np
import onnxruntime_genai as og
import pytest

from tests.conftest import ENGINE_IDS, ENGINES, load
from tests.helpers import finished_sequences, new_generator

by_engine = pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
PROMPT = [5, 17, 42, 9, 300, 7]
SECOND_ROW = [12, 400, 33]  # padded on the right to PROMPT's length


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from gentwin.fixtures.build import build

    return build(str(tmp_path_factory.mktemp("pruned")), ["llama-pruned-fp32"], size="layer_kinds")[0]


def generator(module, folder, prompt=(PROMPT,), **options):
    return new_generator(module, folder, prompt, **{"max_length": 32, **options})


finish = finished_sequences


def test_the_graph_computes_one_position_of_logits_after_a_prompt(folder):
    gen = generator(og, folder)
    assert gen.get_output("logits").shape == (1, 1, load("gentwin.reference", folder).config.vocab_size)


@by_engine
def test_logits_and_outputs_match_the_peer_after_the_prompt(engine, folder):
    expected, ours = generator(og, folder), generator(engine, folder)
    assert ours.get_output("logits").shape == expected.get_output("logits").shape
    np.testing.assert_allclose(ours.get_logits(), expected.get_logits(), rtol=0, atol=5e-5)


@by_engine
@pytest.mark.parametrize("options", [{}, {"do_sample": True, "top_k": 20, "random_seed": 7},
                                     {"num_beams": 3, "num_return_sequences": 2}], ids=["greedy", "sampled", "beams"])
def test_streams_match_the_peer(engine, folder, options):
    rows = options.get("num_return_sequences", 1)
    assert finish(generator(engine, folder, **options), rows) == finish(generator(og, folder, **options), rows)


@by_engine
def test_a_right_padded_batch_reads_the_last_position_as_the_peer_does(engine, folder):
    pad = load("gentwin.reference", folder).config.pad_token_id
    prompt = [PROMPT, SECOND_ROW + [pad] * (len(PROMPT) - len(SECOND_ROW))]
    expected, ours = generator(og, folder, prompt), generator(engine, folder, prompt)
    np.testing.assert_allclose(ours.get_logits(), expected.get_logits(), rtol=0, atol=5e-5)
    assert finish(ours, 2) == finish(expected, 2)


@by_engine
def test_chat_continuation_and_rewind_match_the_peer(engine, folder):
    """A second turn of several tokens over the past (one row of logits from it too), then a rewind and
    another append (the peer is made to run its last generated token first: README, Differences 1)."""
    streams = []
    for module in (og, engine):
        gen = generator(module, folder)
        finish(gen, count=5)
        if module is og:
            gen.get_logits()
        gen.append_tokens(np.array([[61, 62, 63, 64]], dtype=np.int32))
        finish(gen, count=6)
        gen.rewind_to(8)
        gen.append_tokens(np.array([[70, 71]], dtype=np.int32))
        streams.append(finish(gen))
    assert streams[1] == streams[0]


@by_engine
def test_ngram_drafting_is_refused_when_the_generator_is_made_as_by_the_peer(engine, folder):
    """Verifying K drafts needs K + 1 rows of logits, which a pruned head does not give."""
    refusals = []
    for module in (og, engine):
        model = module.Model(folder)
        params = module.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=12)
        params.set_speculative_options(ngram_size=3)
        with pytest.raises(RuntimeError, match="pruned last-token-only logits are not supported") as refusal:
            module.Generator(model, params)
        refusals.append(str(refusal.value))
    assert refusals[1] == refusals[0]
