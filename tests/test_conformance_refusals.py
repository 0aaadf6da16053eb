"""`gentwin check` where a side cannot make the Model or the Generator: that refusal is the scenario's one event.
Both sides refusing alike (in their own words) is no divergence, and the run goes on; one refusing alone is."""

from __future__ import annotations

import io
import json
import shutil

import onnxruntime_genai as og
import pytest

import gentwin.fast
import gentwin.reference
from gentwin.conformance.check import check
from gentwin.conformance.model_facts import ModelFacts
from gentwin.conformance.scenarios import ModelRefused, Scenario
from gentwin.conformance.verdict import DIVERGED, IDENTICAL, Side, judge
from gentwin.errors import GentwinError
from tests.conftest import FIXTURE_MODELS

FOLDER = FIXTURE_MODELS / "llama-fp32"
TOO_MANY_SEQUENCES = Scenario("refused", ((5, 6, 7),), (("generate", 3),), {"num_beams": 2, "num_return_sequences": 3})


@pytest.mark.parametrize("impl", [og, gentwin.fast], ids=["peer", "fast"])
def test_a_generator_both_sides_refuse_is_refused_alike(impl):
    verdict = judge(Side(impl, impl.Model(str(FOLDER))), Side(gentwin.reference, gentwin.reference.Model(str(FOLDER))),
                    TOO_MANY_SEQUENCES, ModelFacts.read(FOLDER))
    assert verdict.outcome == IDENTICAL and verdict.refused
    assert verdict.detail.startswith("both refused: implementation Generator(): ")
    assert verdict.detail.count("num_return_sequences (3) must be in [1, ") == 2


def test_a_side_refusing_alone_diverges():
    facts = ModelFacts.read(FOLDER)
    refusing = Side(gentwin.fast, ModelRefused(GentwinError("no such kernel")))
    playing = Side(gentwin.reference, gentwin.reference.Model(str(FOLDER)))
    scenario = Scenario("plays", ((5, 6, 7),), (("generate", 3),))
    for sides, implementation in (((refusing, playing), "refused 'Model(): GentwinError: no such kernel'"),
                                  ((playing, refusing), "prompt_logits")):
        verdict = judge(*sides, scenario, facts)
        assert verdict.outcome == DIVERGED and not verdict.refused
        assert verdict.detail.startswith(f"after the prompt: implementation {implementation}")


def test_a_folder_both_sides_refuse_at_model_is_reported_and_the_run_goes_on(tmp_path):
    """Both engines refuse a layer count the graph contradicts at Model(); the check plays every family's
    battery as that refusal, generates nothing for it, checks the next folder and passes."""
    broken = tmp_path / "llama-fp32-three-layers"
    shutil.copytree(FOLDER, broken)
    config = json.loads((broken / "genai_config.json").read_text())
    config["model"]["decoder"]["num_hidden_layers"] = 3
    (broken / "genai_config.json").write_text(json.dumps(config))
    out = io.StringIO()
    assert check("gentwin.fast", "gentwin.reference", [broken, FIXTURE_MODELS / "gpt2-fp32"], examples=1, out=out)
    report = out.getvalue()
    assert "refused alike on llama-fp32-three-layers / greedy" in report
    assert "Model(): ConfigError: genai_config.json: 'model.decoder.num_hidden_layers' is 3" in report
    assert "DIVERGED" not in report and "refused alike on gpt2-fp32" not in report
