"""Seeded sampling through the whole generate loop, against the peer: prompts, chat turns, rewinds.

gentwin.fast runs the peer's own onnxruntime kernels, so its logits are the peer's bit for bit and it is held
to identical streams on every model. The reference is held to them on fp32 models, whose logits agree with the
peer's to float rounding, and a draw landing within that error of a probability boundary is too rare to meet
here. int4 models with accuracy_level 4 round activations to int8, so a last-bit difference can move the
reference's logits by ~1e-5 and flip a draw near a boundary; those comparisons need the numerical-tie
accounting of the conformance harness, and the sampler itself is proven exact on given logits in
test_sampling.py.
"""

from __future__ import annotations

import onnxruntime_genai as og
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gentwin.conformance.scenarios import Scenario, play
from tests.conftest import ENGINE_IDS, ENGINES, MODEL_DIRS, MODEL_IDS, load

CASES = [(engine, path) for engine in ENGINES for path in MODEL_DIRS
         if engine.__name__ == "gentwin.fast" or "int4" not in path.name]
CASE_IDS = [f"{engine_id}-{model_id}" for engine_id in ENGINE_IDS for path, model_id in zip(MODEL_DIRS, MODEL_IDS)
            if engine_id == "fast" or "int4" not in path.name]
by_case = pytest.mark.parametrize("engine, path", CASES, ids=CASE_IDS)

sampling_options = st.fixed_dictionaries(
    {"do_sample": st.just(True), "random_seed": st.integers(0, 2**31 - 1)},
    optional={
        "top_k": st.sampled_from([0, 2, 5, 50]),
        "top_p": st.sampled_from([0.3, 0.8, 0.95, 1.0]),
        "temperature": st.sampled_from([0.5, 1.0, 1.7]),
        "repetition_penalty": st.sampled_from([1.0, 1.3]),
        "no_repeat_ngram_size": st.sampled_from([0, 2]),
        "min_length": st.sampled_from([0, 12]),
    },
).filter(lambda o: o.get("top_k", 50) > 0 or "top_p" in o)  # top_k 0 needs a nucleus: gpt2's default top_p is 0

token = st.integers(3, 999)
# Each rewind goes back at least 2 tokens and is followed by an append (see README, "Differences"): the
# peer refuses to rewind to what its KV cache holds without a shared buffer, and generating right after a
# rewind differs.
turn = st.one_of(
    st.tuples(st.just("generate"), st.integers(1, 6)).map(lambda step: (step,)),
    st.tuples(st.just("append"), st.lists(token, min_size=1, max_size=4)).map(lambda step: (step,)),
    st.integers(2, 8).map(lambda back: (("rewind_back", back), ("append", [7]))),
)
chat_steps = st.lists(turn, min_size=1, max_size=6).map(lambda turns: tuple(s for t in turns for s in t))


@by_case
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(options=sampling_options, prompt=st.lists(token, min_size=2, max_size=6), steps=chat_steps)
@example(options={"do_sample": True, "random_seed": 7, "top_k": 50, "top_p": 0.9}, prompt=[5, 17, 42],
         steps=(("generate", 4), ("rewind_back", 2), ("append", [11, 12]), ("generate", 5)))
def test_sampled_chat_streams_match_the_peer(engine, path, options, prompt, steps):
    scenario = Scenario("sampled-chat", (tuple(prompt),), steps + (("generate", 4),), {"max_length": 64, **options})
    expected = play(og, load("onnxruntime_genai", str(path)), scenario, feed_pending_before_append=True)
    assert play(engine, load(engine.__name__, str(path)), scenario) == expected


@by_case
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_sampled_batch_streams_match_the_peer(engine, path, seed):
    scenario = Scenario("sampled-batch", ((5, 17, 42, 2, 2, 2), (9, 8, 7, 6, 5, 4)), (("finish",),),
                        {"max_length": 32, "do_sample": True, "random_seed": seed, "top_k": 40, "top_p": 0.9,
                         "temperature": 0.8})
    expected = play(og, load("onnxruntime_genai", str(path)), scenario)
    assert play(engine, load(engine.__name__, str(path)), scenario) == expected
