"""gentwin.fast's GPU search path, run on the CPU with a CuPy stand-in (tests/device_standin.py).

Under CUDA the logits never leave the device whole: the processors bring the few columns they can change
to the host (fast/penalties.py), the sampler brings the candidates (fast/sampling.py). Fed the same logits,
that path must choose exactly what the host path chooses, for every option, row and step. What the
stand-in cannot check is the GPU's own arithmetic: that needs a GPU (tests/test_fast.py, CUDA tests).
"""

from __future__ import annotations

import types

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gentwin.fast import penalties as fast_penalties
from gentwin.fast import search as fast_search
from gentwin.reference import penalties
from gentwin.reference import search as reference_search
from gentwin.search_options import SEARCH_DEFAULTS
from gentwin.sequences import Sequences
from tests.device_standin import standin_cupy

LOWEST = np.finfo(np.float32).min
SPECIAL_LOGITS = [0.0, -0.0, LOWEST, np.inf, -np.inf, np.nan, 1e30, -1e30]


@st.composite
def logits_and_history(draw):
    vocab = draw(st.integers(2, 40))
    rows = draw(st.integers(1, 3))
    length = draw(st.integers(1, 12))
    # ids outside [0, vocab) too: a pad id past the vocabulary, or a negative one, must be skipped alike
    sequences = np.array(draw(st.lists(st.lists(st.integers(-2, vocab + 2), min_size=length, max_size=length),
                                       min_size=rows, max_size=rows)), np.int32)  # [rows, length]
    values = st.floats(-50, 50, width=32) | st.sampled_from(SPECIAL_LOGITS)
    logits = np.array(draw(st.lists(st.lists(values, min_size=vocab, max_size=vocab), min_size=rows,
                                    max_size=rows)), np.float32)  # [rows, vocab]
    return logits, sequences


processor_options = st.fixed_dictionaries({}, optional={
    "min_length": st.integers(0, 16),
    "repetition_penalty": st.sampled_from([0.5, 1.0, 1.3]) | st.floats(0.1, 3.0),
    "no_repeat_ngram_size": st.integers(0, 3),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=logits_and_history(), options=processor_options, eos=st.lists(st.integers(-1, 45), max_size=3),
       prompt_length=st.integers(0, 12), bias=st.dictionaries(st.integers(0, 1), st.floats(-5, 5), max_size=2))
def test_processors_on_device_columns_equal_the_reference(case, options, eos, prompt_length, bias):
    logits, sequences = case
    expected = logits.copy()
    penalties.process_logits(expected, sequences, options, eos, prompt_length, bias)
    with standin_cupy() as device:
        on_device = device.asarray(logits)
        fast_penalties.process_logits(on_device, sequences, options, eos, prompt_length, bias)
        # equal as floats (NaN equals NaN): the reference subtracts a zero penalty from every column, which
        # can turn -0.0 into 0.0 where the device path leaves an untouched column alone; no choice sees a sign of zero
        np.testing.assert_array_equal(on_device.get(), expected)


search_options = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"do_sample": st.just(True), "top_k": st.integers(0, 60), "top_p": st.floats(0.05, 1.0),
                           "temperature": st.floats(0.1, 3.0)}),
    st.fixed_dictionaries({"num_beams": st.integers(2, 3), "length_penalty": st.floats(0.5, 2.0)}),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(options=search_options, extras=processor_options, seed=st.integers(0, 2**31 - 1),
       batch=st.integers(1, 3), steps=st.integers(1, 8), vocab=st.sampled_from([7, 50, 300]))
def test_fast_search_on_device_logits_chooses_as_the_reference(options, extras, seed, batch, steps, vocab):
    options = {**SEARCH_DEFAULTS, "max_length": 40, "batch_size": batch, "random_seed": seed, **options, **extras}
    config = types.SimpleNamespace(eos_token_ids=[1], pad_token_id=0, vocab_size=vocab)
    rows = batch * options["num_beams"]
    searches = [reference_search.create_search(options, config), fast_search.create_search(options, config)]
    sequences = [Sequences(rows, 40, [1]) for _ in searches]
    prompt = np.random.default_rng(seed).integers(2, vocab, (rows, 4)).astype(np.int32)  # [rows, 4]
    for each in sequences:
        each.append_prompt(prompt)
    rng = np.random.default_rng(seed + 1)
    with standin_cupy() as device:
        for step in range(steps):
            logits = rng.normal(0, 2, (rows, vocab)).astype(np.float32)  # [rows, vocab]
            logits[rng.random(rows) < 0.3, 1] = 50  # EOS: rows finish while others go on
            chosen = [searches[0].advance(logits.copy(), sequences[0]),
                      searches[1].advance(device.asarray(logits), sequences[1])]
            (host_tokens, host_order), (device_tokens, device_order) = chosen
            assert device_tokens.tolist() == host_tokens.tolist(), f"step {step}"
            assert (host_order is None) == (device_order is None)
            if host_order is not None:
                assert device_order.tolist() == host_order.tolist()
            assert sequences[1].current().tolist() == sequences[0].current().tolist()
            if searches[0].is_done(sequences[0]):
                break
