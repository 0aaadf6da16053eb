"""`gentwin check` catches deliberately broken implementations (tests/broken_impls: gentwin.fast with one thing
broken each), exits non-zero within a minute, and names the family of scenarios that caught it.

One model (llama-fp32) and 10 generated scenarios per family keep this quick; the default run, all fixtures
and more scenarios, catches each of them too. gentwin.fast itself passes the same run: the breaks are what fails.
"""

from __future__ import annotations

import time

import pytest

from gentwin.cli import main
from tests.conftest import FIXTURE_MODELS

MODEL = FIXTURE_MODELS / "llama-fp32"
ARGUMENTS = ["--model", str(MODEL), "--examples", "10"]
A_MINUTE = 60.0

# broken module -> a family whose scenarios must catch it
BREAKS = {
    "top_k_off_by_one": "sampling",
    "top_p_slightly_off": "sampling",
    "temperature_slightly_off": "sampling",
    "repetition_penalty_ignored": "penalties",
    "seed_ignored": "sampling",
    "min_length_ignored": "min_length",
    "length_penalty_ignored": "beam",
    "rewind_off_by_one": "chat",
    "second_turn_loses_token": "chat",
    "logits_drift": "logits",
    "drafts_not_rolled_back": "speculative",
}


def run_check(impl: str, capsys) -> tuple[int, str, float]:
    started = time.perf_counter()
    status = main(["check", "--impl", impl, *ARGUMENTS])
    return status, capsys.readouterr().out, time.perf_counter() - started


def test_gentwin_fast_passes_the_same_run(capsys):
    status, out, _ = run_check("gentwin.fast", capsys)
    assert status == 0, out


@pytest.mark.parametrize("broken, family", BREAKS.items(), ids=list(BREAKS))
def test_a_broken_implementation_fails_within_a_minute(broken, family, capsys):
    status, out, seconds = run_check(f"tests.broken_impls.{broken}", capsys)
    assert status == 1, out
    assert f"DIVERGED on {MODEL.name} / {family}:" in out, out
    assert "reproduce with" in out and "scenario = Scenario(" in out
    assert seconds < A_MINUTE
