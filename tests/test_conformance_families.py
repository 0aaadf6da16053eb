"""The scenario families generate what they promise. Checked on the scenarios `gentwin check` generates
(derandomized here), played on gentwin.reference with and without the option each is about:

- min_length: EOS is reachable, and min_length is what holds it back: the sequence ends at min_length, and
  without min_length it ends sooner;
- beam: early_stopping ends searches before max_length, and length_penalty (never 1) changes the beams;
- penalties: the processors change the tokens;
- chat: appends, rewinds, set_logits and get_logits all occur; with the peer, every rewind goes back 2 tokens or
  more and an append follows it at once (README, "Differences", 2 and 3); gentwin's extra options are only
  generated when both sides accept them.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib

from hypothesis import HealthCheck, Phase, given, settings

import gentwin.reference as ref

from gentwin.conformance.check import same_scenarios_for_a_seed
from gentwin.conformance.families import FAMILIES, Capabilities
from gentwin.conformance.model_facts import ModelFacts
from gentwin.conformance.scenarios import play
from gentwin.conformance.verdict import Side
from gentwin.config import EXTRA_SEARCH_DEFAULTS
from tests.conftest import FIXTURE_MODELS, load

FOLDER = FIXTURE_MODELS / "llama-fp32"
FAMILY = {family.name: family for family in FAMILIES}


@functools.lru_cache(maxsize=None)
def capabilities(impl: str) -> Capabilities:
    return Capabilities.of([Side(importlib.import_module(name), load(name, str(FOLDER)))
                            for name in (impl, "gentwin.reference")])


def generated(family: str, impl: str = "gentwin.fast", count: int = 40) -> list:
    found = []

    @settings(max_examples=count, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(FAMILY[family].strategy(ModelFacts.read(FOLDER), capabilities(impl)))
    def collect(scenario):
        found.append(scenario)

    with same_scenarios_for_a_seed():
        collect()
    return found


def on_reference(scenario, **options) -> list:
    """The events of SCENARIO, with OPTIONS in place of its own, on gentwin.reference."""
    changed = dataclasses.replace(scenario, options={**scenario.options, **options})
    return play(ref, load("gentwin.reference", str(FOLDER)), changed)


def returned(events) -> tuple:
    return next(event.value for event in events if event.kind == "returned")


def test_min_length_holds_back_an_eos_that_is_reachable():
    singles = [s for s in generated("min_length") if s.batch_size == 1]
    held = [s for s in singles
            if len(returned(on_reference(s))[0]) == s.options["min_length"]
            and len(returned(on_reference(s, min_length=0))[0]) < s.options["min_length"]]
    assert len(held) >= len(singles) // 2, (len(held), len(singles))


def test_beam_search_stops_early_and_length_penalty_matters():
    scenarios = generated("beam")
    assert all(s.options["length_penalty"] != 1.0 for s in scenarios)
    stopped_early = [s for s in scenarios if s.options["early_stopping"]
                     and [e.value for e in on_reference(s) if e.kind == "length"][-1] < s.options["max_length"]]
    penalty_matters = [s for s in scenarios
                       if returned(on_reference(s)) != returned(on_reference(s, length_penalty=1.0))]
    assert len(stopped_early) >= 3 and len(penalty_matters) >= 3, (len(stopped_early), len(penalty_matters))


def test_the_penalties_change_the_tokens():
    scenarios = generated("penalties")
    defaults = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, **EXTRA_SEARCH_DEFAULTS}
    changed = [s for s in scenarios if returned(on_reference(s)) != returned(on_reference(s, **defaults))]
    # not all: a penalty that misses the few tokens in contention changes nothing
    assert len(changed) >= len(scenarios) // 3, (len(changed), len(scenarios))


def test_chats_append_rewind_and_steer():
    kinds = {step[0] for s in generated("chat") for step in s.steps}
    assert {"generate", "append", "rewind_back", "set_logits", "get_logits"} <= kinds


def test_scenarios_played_against_the_peer_avoid_its_documented_bugs_only():
    for scenario in generated("chat", impl="onnxruntime_genai", count=60):
        steps = scenario.steps
        for index, step in enumerate(steps):
            if step[0] == "rewind_back":
                assert step[1] >= 2 and steps[index + 1][0] == "append", steps
    with_peer = [s.options for family in ("penalties", "min_length") for s in generated(family, "onnxruntime_genai")]
    assert not any(name in options for options in with_peer for name in EXTRA_SEARCH_DEFAULTS)
    with_fast = [s.options for family in ("penalties", "min_length") for s in generated(family)]
    assert all(any(name in options for options in with_fast) for name in EXTRA_SEARCH_DEFAULTS)
