"""The model's logit bound (gentwin.conformance.model_facts) and the two-question verdict on a deep int4 model;
the bound's share for half precision, measured on the graph computed in float32.

Tiny-width llama-layout models (hidden 32) with int4 MatMulNBits at accuracy_level 4 are built on demand with 2
and 30 layers, and each with accuracy_level 1 as well (the same weights, the fixture builder's own unrounded
model), so the bound is checked against a twin made independently of twins.rounding_twin.
"""

from __future__ import annotations

import importlib
from dataclasses import replace

import numpy as np
import onnx
import pytest

import gentwin.reference as ref
from gentwin.conformance.families import FAMILIES
from gentwin.conformance.model_facts import FLOAT_RELATIVE_TOLERANCE, ModelFacts, prompt_logits
from gentwin.conformance.twins import HALF_TYPES, computes_in_half_precision, rounding_twin
from gentwin.conformance.scenarios import Scenario, logits_before_each_choice
from gentwin.conformance.verdict import DIVERGED, IDENTICAL, MODEL, SAME, TIE, Side, judge
from gentwin.fixtures.build import write_model_folder
from gentwin.fixtures.layouts import FIXTURES, Dims, Int4
from gentwin.fixtures.tokenizer import train_tokenizer
from tests.conftest import FIXTURE_MODELS as FIXTURES_DIR, load
from tests.test_conformance_ties import steered_model

PROMPT = ((17, 250, 31, 402, 77, 5, 611, 48, 90, 300),)


@pytest.fixture(scope="session")
def deep_models(tmp_path_factory) -> dict:
    """{(layers, accuracy_level): folder}."""
    root, tokenizer, folders = tmp_path_factory.mktemp("deep-int4"), train_tokenizer(), {}
    for layers in (2, 30):
        dims = Dims(hidden_size=32, num_layers=layers, num_heads=2, num_kv_heads=1, head_size=16, intermediate_size=64)
        for level in (4, 1):
            folder = root / f"llama-{layers}-layers-int4-level{level}"
            write_model_folder(str(folder), replace(FIXTURES["llama-int4"], dims=dims,
                                                    int4=Int4(symmetric=True, accuracy_level=level)), tokenizer)
            folders[layers, level] = folder
    return folders


def levels(folder) -> set:
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    return {a.i for node in graph.node if node.op_type == "MatMulNBits" for a in node.attribute
            if a.name == "accuracy_level"}


def test_the_rounding_twin_is_the_same_model_without_int8_activations(deep_models):
    folder = deep_models[30, 4]
    twin = rounding_twin(folder)
    assert levels(folder) == {4} and levels(twin) <= {0}
    built_unrounded = prompt_logits(ref, ref.Model(str(deep_models[30, 1])), PROMPT)   # [1, S, V]
    np.testing.assert_array_equal(prompt_logits(ref, ref.Model(str(twin)), PROMPT), built_unrounded)


def test_the_bound_is_float_rounding_plus_twice_what_int8_rounding_does_to_the_model(deep_models):
    facts = ModelFacts.read(deep_models[30, 4])
    logits = prompt_logits(ref, ref.Model(str(deep_models[30, 4])), PROMPT)[0]            # [S, V]
    unrounded = prompt_logits(ref, ref.Model(str(deep_models[30, 1])), PROMPT)[0]
    scale = np.maximum(1, np.abs(logits.astype(np.float64)).max(axis=-1))                 # [S]
    relative = np.abs(logits.astype(np.float64) - unrounded).max(axis=-1) / scale          # [S]
    rounding = facts.model_rounding([(logits, unrounded)])
    assert rounding == max(facts.calibrated_rounding, relative.max())
    assert relative.min() < rounding  # a row whose own D is small still gets the model's
    np.testing.assert_allclose(facts.logit_bound(logits, rounding),
                               (FLOAT_RELATIVE_TOLERANCE + 2 * rounding) * scale, rtol=1e-9)
    np.testing.assert_allclose(facts.float_bound(logits), FLOAT_RELATIVE_TOLERANCE * scale, rtol=1e-9)


def test_a_model_that_does_not_round_has_no_rounding_share(deep_models):
    facts = ModelFacts.read(deep_models[30, 1])
    logits = prompt_logits(ref, ref.Model(str(deep_models[30, 1])), PROMPT)[0]
    assert facts.model_rounding([(logits, logits + 1)]) == 0.0


def test_the_bound_grows_with_depth_and_is_float_rounding_alone_without_int8_activations(deep_models):
    shallow, deep, unrounded = (ModelFacts.read(deep_models[key]) for key in ((2, 4), (30, 4), (30, 1)))
    assert 0 < shallow.calibrated_rounding < deep.calibrated_rounding
    assert not unrounded.rounds_activations_to_int8 and unrounded.calibrated_rounding == 0.0
    logits = np.array([[3.0, -20.0, 1.0]], np.float32)
    assert unrounded.allowed_logit_error(logits) == pytest.approx(20 * FLOAT_RELATIVE_TOLERANCE)
    assert deep.allowed_logit_error(logits) == pytest.approx(20 * (FLOAT_RELATIVE_TOLERANCE
                                                                   + 2 * deep.calibrated_rounding))


LOGITS = Scenario("logits", PROMPT, logits_before_each_choice(4), {"max_length": len(PROMPT[0]) + 4})


@pytest.mark.parametrize("fraction, outcome", [(0.5, IDENTICAL), (1.5, DIVERGED)], ids=["within", "beyond"])
def test_a_perturbation_beyond_the_bound_is_caught(deep_models, fraction, outcome):
    """Every logit of a token moved by FRACTION of the smallest bound over the logits the scenario reads (the
    token is the lowest-scoring one, so no choice changes)."""
    folder = deep_models[30, 4]
    facts, model = ModelFacts.read(folder), load("gentwin.reference", str(folder))
    player = Side(ref, model).player(LOGITS, capture_until=3)
    player.play()
    twin = Side(ref, load("gentwin.reference", str(deep_models[30, 1]))).player(
        LOGITS, capture_until=3, replace_logits=player.captured[:3])
    twin.play()
    rounding = facts.model_rounding(zip(player.captured, twin.captured))
    bounds = [facts.logit_bound(ours, rounding) for ours in player.captured]
    lowest = int(np.argmin(player.captured[0][0]))
    result = judge(Side(steered_model({}, {lowest: fraction * float(np.min(bounds))}), model),
                   Side(ref, model), LOGITS, facts)
    assert result.outcome == outcome, result.detail
    if outcome == DIVERGED:
        assert result.diverged_in == MODEL and "beyond the model's bound" in result.detail, result.detail


def test_the_peer_on_a_deep_int4_model_is_identical_or_a_tie_its_logits_within_the_bound(deep_models):
    """Every fixed battery of gentwin check, the peer against gentwin.reference on the 30-layer model: where
    the streams part, the peer fed the reference's logits makes its every choice."""
    folder = deep_models[30, 4]
    facts = ModelFacts.read(folder)
    sides = [Side(importlib.import_module(name), load(name, str(folder))) for name in ("onnxruntime_genai",
                                                                                       "gentwin.reference")]
    verdicts = [judge(*sides, scenario, facts) for family in FAMILIES for scenario in family.battery(facts)]
    assert [v.detail for v in verdicts if v.outcome not in (IDENTICAL, TIE)] == []
    assert all(v.worst <= 1 and v.rows > 0 for v in verdicts)
    assert all(v.search == SAME for v in verdicts if v.outcome == TIE)


# --- Half precision: the twin computed in float32 ---------------------------------------------------------------


@pytest.fixture(scope="session")
def half_models(tmp_path_factory) -> dict:
    from tests.conftest import _built_on_demand

    models = _built_on_demand(tmp_path_factory, "precisions")
    return {"fp16": models["mistral-mha-fp16"], "bf16": models["mistral-mha-bf16"]}


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_the_twin_of_a_half_precision_graph_computes_in_float32_on_the_same_weights(half_models, precision):
    folder = half_models[precision]
    original = onnx.load(str(folder / "model.onnx"))
    twin = onnx.load(str(rounding_twin(folder) / "model.onnx"))
    assert computes_in_half_precision(original.graph) and not computes_in_half_precision(twin.graph)
    widened = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in twin.graph.initializer}
    for tensor in original.graph.initializer:
        weight = onnx.numpy_helper.to_array(tensor)
        expected = weight.astype(np.float32) if tensor.data_type in HALF_TYPES else weight
        np.testing.assert_array_equal(widened[tensor.name], expected)
    casts = [a.i for node in twin.graph.node if node.op_type == "Cast" for a in node.attribute if a.name == "to"]
    assert not set(casts) & set(HALF_TYPES)


def test_half_precision_is_measured_and_bf16_rounds_more_than_fp16(half_models):
    fp16, bf16 = (ModelFacts.read(half_models[p]) for p in ("fp16", "bf16"))
    assert fp16.half_precision and bf16.half_precision and fp16.rounds_beyond_float32
    assert not fp16.rounds_activations_to_int8
    assert 0 < fp16.calibrated_rounding < bf16.calibrated_rounding
    assert not ModelFacts.read(FIXTURES_DIR / "mistral-mha-fp32").rounds_beyond_float32
