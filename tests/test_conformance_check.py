"""`gentwin check` end to end: gentwin.fast and onnxruntime-genai 0.18.0 pass against gentwin.reference on the
bundled fixtures; the scenarios generated follow the seed; bad arguments raise errors that name them.
(test_conformance_broken.py shows that it fails what it should.)"""

from __future__ import annotations

import importlib
import re
import sys

import pytest

from gentwin.cli import main
from gentwin.conformance.check import Cell, check, search
from gentwin.conformance.families import FAMILIES, Capabilities
from gentwin.conformance.model_facts import ModelFacts
from gentwin.conformance.verdict import IDENTICAL, Verdict
from gentwin.errors import GentwinError
from tests.conftest import FIXTURE_MODELS

FIXTURES = sorted(p.name for p in FIXTURE_MODELS.glob("*") if (p / "genai_config.json").is_file())


@pytest.mark.parametrize("impl", ["gentwin.fast", "onnxruntime_genai"])
def test_a_sound_implementation_passes_on_the_bundled_fixtures(impl, capsys):
    assert main(["check", "--impl", impl, "--examples", "3"]) == 0
    out = capsys.readouterr().out
    table, questions = out[out.index("identical/diverged/tie per model and family"):].split("the two questions", 1)
    header = next(line for line in table.splitlines() if line.strip().startswith("model"))
    assert header.split()[1:] == [family.name for family in FAMILIES]
    rows = {words[0]: words[1:] for words in map(str.split, table.splitlines()) if words[:1] in [[m] for m in FIXTURES]}
    assert sorted(rows) == FIXTURES
    assert all(re.fullmatch(r"\d+/0/\d+", cell) for cells in rows.values() for cell in cells), table
    answers = {line.split()[0]: line for line in questions.splitlines() if line.split()[:1] in [[m] for m in FIXTURES]}
    assert sorted(answers) == FIXTURES
    for answer in answers.values():  # both questions answered on every model, and answered yes
        assert re.search(r"\b[1-9]\d* rows, worst [0-9.e+-]+ of the bound, 0 beyond +\d+ replayed, "
                         r"0 chose otherwise$", answer), answer
    assert "DIVERGED" not in out
    assert re.search(r"^gentwin check took \d+ s$", out, re.MULTILINE)  # what the README's timing refers to


def test_the_same_seed_generates_the_same_scenarios_whatever_is_imported(tmp_path, monkeypatch):
    facts = ModelFacts.read(FIXTURE_MODELS / "qwen2-int4")
    penalties = next(family for family in FAMILIES if family.name == "penalties")
    strategy = penalties.strategy(facts, Capabilities(extras=frozenset({"presence_penalty", "frequency_penalty"}),
                                                      peer_safe=True))

    def scenarios(seed: int) -> list:
        played = []
        search(lambda scenario: played.append(scenario) or Verdict(IDENTICAL), strategy, Cell(), 40, seed, True)
        return played

    first = scenarios(3)
    assert scenarios(4) != first
    # a module of the user's own, full of literals hypothesis would otherwise draw from (penalties, token ids)
    (tmp_path / "users_own_module.py").write_text(
        "LITERALS = [" + ", ".join(f"{n}, {n / 97:.5f}" for n in range(100, 400)) + "]\n")
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.delitem(sys.modules, "users_own_module", raising=False)
    importlib.import_module("users_own_module")
    assert scenarios(3) == first


def test_a_module_that_cannot_be_imported_is_named():
    with pytest.raises(GentwinError, match="no_such_engine"):
        check("no_such_engine", "gentwin.reference", [FIXTURE_MODELS / "llama-fp32"], examples=0)


def test_a_negative_number_of_examples_is_refused():
    with pytest.raises(GentwinError, match="--examples"):
        check("gentwin.fast", "gentwin.reference", [FIXTURE_MODELS / "llama-fp32"], examples=-1)


def test_the_junit_xml_has_a_case_per_model_and_family_failed_where_it_diverged(tmp_path, capsys):
    import xml.etree.ElementTree as ElementTree

    folder, sound, broken = FIXTURE_MODELS / "llama-fp32", tmp_path / "sound.xml", tmp_path / "broken.xml"
    assert main(["check", "--model", str(folder), "--examples", "0", "--junit-xml", str(sound)]) == 0
    assert not check("tests.broken_impls.top_k_off_by_one", "gentwin.reference", [folder], examples=0,
                     junit_file=broken)
    capsys.readouterr()
    for path, diverges in ((sound, False), (broken, True)):
        suites = {suite.get("name"): suite for suite in ElementTree.parse(path).getroot()}
        assert set(suites) == {"llama-fp32", "the run"}
        cases = {case.get("name"): case for case in suites["llama-fp32"]}
        assert set(cases) == {family.name for family in FAMILIES}
        failures = [case.find("failure") for case in cases.values() if case.find("failure") is not None]
        assert int(suites["llama-fp32"].get("failures")) == len(failures) and bool(failures) == diverges
        assert all("top_k_off_by_one" in failure.text and "judge(" in failure.text for failure in failures)
        assert suites["the run"].find("testcase").find("failure") is None
