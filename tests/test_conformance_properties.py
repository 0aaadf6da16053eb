"""The conformance properties of `gentwin check`, in pytest: gentwin.fast and onnxruntime-genai 0.18.0, each
against gentwin.reference, on every model folder (the fixtures, and ../shared/models when it is there).

Every scenario family (gentwin.conformance.families) must never diverge: numerical ties are allowed here, one
scenario at a time (`gentwin check` bounds how many a run may have; test_conformance_check.py). The fixed
batteries, the committed regression cases included, are played in full on every model.
"""

from __future__ import annotations

import functools
import importlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gentwin.conformance.families import FAMILIES, Capabilities
from gentwin.conformance.model_facts import ModelFacts
from gentwin.conformance.verdict import DIVERGED, Side, judge
from tests.conftest import MODEL_DIRS, MODEL_IDS, load

IMPLEMENTATIONS = ["gentwin.fast", "onnxruntime_genai"]
ORACLE = "gentwin.reference"
FAMILY_IDS = [family.name for family in FAMILIES]


@functools.lru_cache(maxsize=None)
def facts_of(folder) -> ModelFacts:
    return ModelFacts.read(folder)


def sides(impl: str, folder) -> tuple[Side, Side]:
    return tuple(Side(importlib.import_module(name), load(name, str(folder))) for name in (impl, ORACLE))


@pytest.mark.parametrize("family", FAMILIES, ids=FAMILY_IDS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
@given(data=st.data())
def test_generated_scenarios_never_diverge(impl, family, data):
    folder = data.draw(st.sampled_from(MODEL_DIRS), label="model")
    implementation, oracle = sides(impl, folder)
    scenario = data.draw(family.strategy(facts_of(folder), Capabilities.of((implementation, oracle))), label="scenario")
    verdict = judge(implementation, oracle, scenario, facts_of(folder))
    assert verdict.outcome != DIVERGED, verdict.detail


@pytest.mark.parametrize("folder", MODEL_DIRS, ids=MODEL_IDS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_fixed_batteries_never_diverge(impl, folder):
    implementation, oracle = sides(impl, folder)
    facts = facts_of(folder)
    verdicts = [(scenario, judge(implementation, oracle, scenario, facts))
                for family in FAMILIES for scenario in family.battery(facts)]
    assert [(s, v.detail) for s, v in verdicts if v.outcome == DIVERGED] == []
