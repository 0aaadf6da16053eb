"""The verdict on one scenario: identical, a numerical tie, or a divergence.

Both implementations play the scenario (scenarios.play); their events are compared in order. Tokens,
sequences, lengths and errors must be equal; logits read by the scenario must agree within the model's
tolerance (model_facts). The first event that differs decides:

- the tokens of a generate_next_token call (call g): perhaps a numerical tie. Both sides are replayed, reading
  their logits before every call up to g. It is a tie when
    1. at every call up to g the two sides' logits agree within the tolerance, and
    2. the oracle, fed the implementation's logits before each call (set_logits), chooses the
       implementation's tokens at call g: the implementation chooses from its logits exactly as the oracle
       would, and the tokens differ only because the logits do.
  The report gives the oracle's margin at call g (margins.py: half the gap to the other token for greedy
  search; for sampling the distance of its random draw from the nearest cumulative-probability boundary,
  both in logit units) beside the measured logit error. The margin alone cannot decide: it moves every logit
  by the same amount in the most favourable direction, but logits of near-equal tokens that swap places move
  a boundary by a whole token's probability, and a divergence on int4 models can come from an earlier step
  through beam scores or the random stream. The replay with the implementation's logits covers all of these,
  and beam search too. After a tie the streams legitimately part: nothing more of the scenario is compared.
- anything else (a sequence after an append or a rewind, logits beyond the tolerance, is_done, an error
  raised by one side): a divergence.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from itertools import zip_longest
from typing import NamedTuple

import numpy as np

from gentwin.conformance.margins import FixedDraw, margin
from gentwin.conformance.model_facts import ModelFacts, logit_error
from gentwin.conformance.scenarios import Event, Player, Scenario, feeds_pending_before_append
from gentwin.reference import penalties, sampling
from gentwin.search_options import resolved, sampling_method

IDENTICAL, TIE, DIVERGED = "identical", "tie", "diverged"


@dataclass(frozen=True)
class Verdict:
    outcome: str
    detail: str = ""


class Side(NamedTuple):
    """An implementation: the module offering the API, and a model folder loaded by its Model."""

    module: object
    model: object

    def player(self, scenario: Scenario, **replay) -> Player:
        """A Player for SCENARIO; REPLAY: capture_until or replace_logits (see Player)."""
        return Player(self.module, self.model, scenario, feeds_pending_before_append(self.module), **replay)


def judge(impl: Side, oracle: Side, scenario: Scenario, facts: ModelFacts) -> Verdict:
    """Play SCENARIO on both sides and give the verdict."""
    impl_events, oracle_events = impl.player(scenario).play(), oracle.player(scenario).play()
    index = first_difference(impl_events, oracle_events, facts)
    if index is None:
        return Verdict(IDENTICAL)
    ours = impl_events[index] if index < len(impl_events) else None
    theirs = oracle_events[index] if index < len(oracle_events) else None
    where = describe(scenario, ours, theirs, facts)
    if ours is not None and theirs is not None and ours[:2] == theirs[:2] and ours.kind == "tokens":
        stream = [event.value for event in impl_events[: index + 1] if event.kind == "tokens"]
        return judge_token_difference(impl, oracle, scenario, facts, stream, theirs.value, where)
    return Verdict(DIVERGED, where)


def first_difference(impl_events: list[Event], oracle_events: list[Event], facts: ModelFacts) -> int | None:
    for index, (ours, theirs) in enumerate(zip_longest(impl_events, oracle_events)):
        if not same_event(ours, theirs, facts):
            return index
    return None


def same_event(ours: Event | None, theirs: Event | None, facts: ModelFacts) -> bool:
    if ours is None or theirs is None or ours[:2] != theirs[:2]:
        return False
    if ours.kind == "logits":
        return (ours.value.shape == theirs.value.shape
                and logit_error(ours.value, theirs.value) <= facts.allowed_logit_error(theirs.value))
    return ours.value == theirs.value


def describe(scenario: Scenario, ours: Event | None, theirs: Event | None, facts: ModelFacts) -> str:
    """Where the first difference is, and what each side observed there."""
    anchor = ours or theirs
    step = "the prompt" if anchor.step < 0 else f"step {anchor.step} {scenario.steps[anchor.step]!r}"
    if ours is not None and theirs is not None and ours[:2] == theirs[:2] and ours.kind == "logits":
        shown = (f"logits differ by up to {logit_error(ours.value, theirs.value):.3g}, beyond the tolerance "
                 f"{facts.allowed_logit_error(theirs.value):.3g}")
    else:
        shown = f"implementation {_shown(ours)}, oracle {_shown(theirs)}"
    return f"after {step}: {shown}"


def _shown(event: Event | None) -> str:
    return "observed nothing more" if event is None else f"{event.kind} {event.value!r}"


def judge_token_difference(impl: Side, oracle: Side, scenario: Scenario, facts: ModelFacts, stream: list,
                           oracle_tokens: tuple, where: str) -> Verdict:
    """The tokens of the last call of STREAM (the implementation's tokens, call by call) differ from the
    oracle's ORACLE_TOKENS: a numerical tie, or a divergence?"""
    call = len(stream) - 1
    ours, theirs = impl.player(scenario, capture_until=call), oracle.player(scenario, capture_until=call)
    replayed_stream = [event.value for event in ours.play() if event.kind == "tokens"]
    theirs.play()
    if replayed_stream != stream[:-1]:
        return Verdict(DIVERGED, f"{where}; played again, the implementation chose other tokens before that call: "
                                 "it is not deterministic (is random_seed honoured?)")
    for step, (mine, truth) in enumerate(zip(ours.captured, theirs.captured)):
        error, allowed = logit_error(mine, truth), facts.allowed_logit_error(truth)
        if error > allowed:
            return Verdict(DIVERGED, f"{where}; before generate call {step} the logits differ by up to {error:.3g}, "
                                     f"beyond the tolerance {allowed:.3g}")
    replayed = oracle.player(scenario, replace_logits=ours.captured).play()
    chosen = [event.value for event in replayed if event.kind == "tokens"]
    explained = chosen == stream
    margin_note = oracle_margin(ours, theirs, facts, stream[-1], oracle_tokens)
    if explained:
        return Verdict(TIE, f"{where}; {margin_note}; fed the implementation's logits, the oracle chooses as it did")
    return Verdict(DIVERGED, f"{where}; {margin_note}; fed the implementation's logits, the oracle still chooses "
                             f"{chosen[-1] if chosen else 'nothing'}: the implementation does not choose from its "
                             "logits as the oracle does")


def oracle_margin(ours: Player, theirs: Player, facts: ModelFacts, impl_tokens: tuple, oracle_tokens: tuple) -> str:
    """How close the oracle was to the implementation's token at the first row that differs, and how much the
    logits differ there. Both players are paused before the call, their logits captured."""
    scenario = theirs.scenario
    row = next(r for r, (a, b) in enumerate(zip(impl_tokens, oracle_tokens)) if a != b)
    error = logit_error(ours.captured[-1][row], theirs.captured[-1][row])
    measured = f"row {row}: the logits differ by up to {error:.3g}"
    if scenario.num_beams > 1:
        return f"{measured} (beam search: scores summed over steps decide, no single-step margin)"
    options = search_options(facts, scenario)
    processed = processed_logits(theirs.captured[-1], theirs, options, facts)                     # [R, V]
    finished = finished_rows(theirs, facts)                                                        # [R]
    rng = getattr(getattr(theirs.generator, "search", None), "rng", None)
    if finished[row] or (sampling_method(options) != "greedy" and rng is None):
        return f"{measured} (no margin: the row had finished, or the oracle exposes no generator.search.rng)"
    words = draw_words(rng, processed[:row], options, finished[:row], facts.pad_token_id)

    def choose(scores: np.ndarray) -> int:
        return int(sampling.choose_next_tokens(scores[None], options, FixedDraw(words))[0])

    needed = margin(choose, processed[row], impl_tokens[row])
    return f"{measured}, the oracle's margin for token {impl_tokens[row]} is {needed:.3g}"


def search_options(facts: ModelFacts, scenario: Scenario) -> dict:
    """The options the scenario's Generator runs with: gentwin's defaults, the folder's, then the scenario's."""
    return resolved(facts.search, scenario.options, {"batch_size": scenario.batch_size})


def processed_logits(logits: np.ndarray, oracle: Player, options: dict, facts: ModelFacts) -> np.ndarray:
    """logits [R, V] after the logits processors, applied with the oracle's sequences."""
    generator = oracle.generator
    sequences = np.array([generator.get_sequence(row) for row in range(oracle.scenario.batch_size)], np.int32)
    processed = np.array(logits, np.float32)                                                       # [R, V]
    penalties.process_logits(processed, sequences, options, facts.eos_token_ids, oracle.reply_start,
                             options["logit_bias"])
    return processed


def finished_rows(player: Player, facts: ModelFacts) -> np.ndarray:
    """Which rows generated EOS since the last append or rewind: bool [R]."""
    if not player.generated:
        return np.zeros(player.scenario.batch_size, bool)
    return np.isin(np.stack(player.generated), facts.eos_token_ids).any(axis=0)


def draw_words(rng, earlier_rows: np.ndarray, options: dict, finished: np.ndarray, pad_token_id: int) -> list:
    """The two 32-bit words the oracle's next draw takes for the row after earlier_rows [r, V] (processed
    logits): the rows before it draw first, from the same generator. [] without a generator (greedy)."""
    if rng is None:
        return []
    rng = copy.deepcopy(rng)
    sampling.choose_next_tokens(earlier_rows, options, rng, finished, pad_token_id)
    return [rng.next_u32(), rng.next_u32()]
