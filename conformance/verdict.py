"""The verdict on one scenario: identical, a numerical tie, or a divergence, from two separate questions.

Both implementations play the scenario (scenarios.play), recording every position's logits after each append;
the oracle also keeps its logits before every choice. Their events are compared in order. Tokens, sequences,
lengths and errors must be equal; logits (read by the scenario, or a turn's every position) must agree within
the model's bound (model_facts.ModelFacts.logit_bound, measured on the oracle's rounding twin where the model
rounds activations to int8). The first event that differs decides:

- the tokens of a generate_next_token call: the streams part, and two questions are asked apart, on a replay
  of the implementation fed the oracle's logits before every choice (set_logits), which keeps both sides on
  the oracle's token history all through the scenario (teacher forcing):
    the model   the implementation's own logits before every choice and at every position of every append,
                on that history, against the oracle's: within the bound at every one?
    the search  the implementation's choices from the oracle's logits, and everything else it shows (sequences,
                lengths, is_done, the returned sequences): exactly the oracle's?
  Both yes: a numerical tie (the tokens differ because the logits do, within what rounding explains). Logits
  beyond the bound: a divergence of the model. Another choice from the same logits: a divergence of the search.
  The report gives the oracle's margin at the first call that differs (margins.py: half the gap to the other
  token for greedy search; for sampling the distance of its random draw from the nearest cumulative-probability
  boundary, both in logit units) beside the logit error there. The margin alone cannot decide: a divergence can
  come from an earlier step through beam scores or the random stream; the replay covers all of these.
- logits beyond the bound before any token differs: the histories are still the same, so that is the model
  question answered: a divergence of the model.
- anything else (a sequence after an append or a rewind, is_done, an error raised by one side): a divergence.

A side whose Model or Generator cannot be made observes only that refusal: both refusing alike (whatever
their words) is identical, one refusing alone a divergence.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from itertools import zip_longest
from typing import NamedTuple

import numpy as np

from gentwin.conformance.margins import FixedDraw, margin
from gentwin.conformance.model_facts import ModelFacts, logit_error, logit_errors, row_scale
from gentwin.conformance.scenarios import (EVERY_CALL, LOGITS_KINDS, REFUSED, Event, Player, Scenario,
                                           feeds_pending_before_append)
from gentwin.conformance.twins import rounding_twin
from gentwin.errors import GentwinError
from gentwin.reference import penalties, sampling
from gentwin.search_options import resolved, sampling_method

IDENTICAL, TIE, DIVERGED = "identical", "tie", "diverged"
MODEL, SEARCH, STREAM = "model", "search", "stream"   # what a divergence is of
SAME, DIFFERS = "same", "differs"                      # the search question's answers


@dataclass(frozen=True)
class Verdict:
    outcome: str
    detail: str = ""
    diverged_in: str = ""   # MODEL, SEARCH or STREAM for a divergence
    worst: float = 0.0      # the model question: the largest logit error compared, as a fraction of its bound
    rows: int = 0           # the model question: how many rows of logits were compared
    search: str = ""        # the search question, where the tokens differed: SAME or DIFFERS
    refused: bool = False   # both sides refused the Model or the Generator (outcome IDENTICAL)


class Side(NamedTuple):
    """An implementation: the module offering the API, and a model folder loaded by its Model."""

    module: object
    model: object
    drafts: bool = True  # plays a scenario's speculative options; the oracle decodes without drafts

    def player(self, scenario: Scenario, **replay) -> Player:
        """A Player for SCENARIO; REPLAY: capture_until, replace_logits or prompt_logits (see Player)."""
        scenario = scenario if self.drafts else scenario.without_drafts()
        return Player(self.module, self.model, scenario, feeds_pending_before_append(self.module), **replay)


class Played(NamedTuple):
    player: Player
    events: list


def played(side: Side, scenario: Scenario, **replay) -> Played:
    player = side.player(scenario, prompt_logits=True, **replay)
    return Played(player, player.play())


class ModelQuestion:
    """The model question on one scenario: the implementation's logits against the oracle's, on the same token
    history, each row within its bound. The rounding twin's logits, which the bound of an int8 model needs,
    are played only when some row is beyond the float-rounding part alone."""

    def __init__(self, oracle: Side, oracle_play: Played, scenario: Scenario, facts: ModelFacts):
        self.oracle, self.oracle_play, self.scenario, self.facts = oracle, oracle_play, scenario, facts
        self.worst, self.rows = 0.0, 0
        self._rounding: float | None = None

    def within(self, ours, theirs) -> str:
        """Compare logits OURS with the oracle's THEIRS [..., vocab]; "" when within the bound, else what
        differs."""
        if np.shape(ours) != np.shape(theirs):
            return f"logits of shape {np.shape(ours)}, the oracle's {np.shape(theirs)}"
        errors = logit_errors(ours, theirs)                                                 # [...]
        bound = self.facts.float_bound(theirs)                                              # [...]
        if self.facts.rounds_beyond_float32 and np.any(errors > bound):
            bound = self.facts.logit_bound(theirs, self.rounding())
        self.rows += errors.size
        self.worst = max(self.worst, float(np.max(errors / bound)) if errors.size else 0.0)
        if np.all(errors <= bound):
            return ""
        row = np.unravel_index(np.argmax(errors / bound), errors.shape)
        return (f"logits differ by up to {errors[row]:.3g} (row {row[0]}), beyond the model's bound "
                f"{bound[row]:.3g}{self._bound_parts(theirs, row)}")

    def _bound_parts(self, theirs, row) -> str:
        if not self.facts.rounds_beyond_float32:
            return " (float rounding)"
        scale = row_scale(theirs)[row]
        return (f" (float rounding {self.facts.float_bound(theirs)[row]:.3g} + 2 x {self.rounding() * scale:.3g}"
                f", {self.facts.rounding_kind}: the model's {self.rounding():.3g} of the row's largest logit {scale:.3g})")

    def rounding(self) -> float:
        """The model's rounding (ModelFacts.model_rounding): the calibration's, and every row of logits of
        this scenario's history against the rounding twin's."""
        if self._rounding is None:
            self._rounding = self.facts.model_rounding(self.twin_pairs())
        return self._rounding

    def twin_pairs(self):
        """(the oracle's logits, the rounding twin's) at every call and every logits event of the scenario,
        the twin fed the oracle's logits before every choice, so on the oracle's token history."""
        twin = played(Side(self.oracle.module, twin_model(self.oracle.module.Model, self.facts.folder), False),
                      self.scenario, capture_until=EVERY_CALL, replace_logits=self.oracle_play.player.captured)
        yield from zip(self.oracle_play.player.captured, twin.player.captured)
        for event, twins_event in zip_longest(self.oracle_play.events, twin.events):
            if event is None or twins_event is None or event[:2] != twins_event[:2]:
                raise GentwinError(f"the oracle on the rounding twin of {self.facts.folder.name} did not follow "
                                   f"its own logits: {twins_event and twins_event[:2]} where the oracle has "
                                   f"{event and event[:2]}")
            if event.kind in LOGITS_KINDS:
                yield event.value, twins_event.value


@functools.lru_cache(maxsize=None)
def twin_model(model_class, folder):
    """A MODEL_CLASS of FOLDER's rounding twin, one per process: loading is the slow part."""
    return model_class(str(rounding_twin(folder)))


def judge(impl: Side, oracle: Side, scenario: Scenario, facts: ModelFacts) -> Verdict:
    """Play SCENARIO on both sides and give the verdict."""
    ours, theirs = played(impl, scenario), played(oracle, scenario, capture_until=EVERY_CALL)
    model = ModelQuestion(oracle, theirs, scenario, facts)
    for index, (mine, truth) in enumerate(zip_longest(ours.events, theirs.events)):
        if mine is None or truth is None or mine[:2] != truth[:2]:
            return _verdict(DIVERGED, describe(scenario, mine, truth), model, STREAM)
        if mine.kind == REFUSED:
            return Verdict(IDENTICAL, f"both refused: implementation {mine.value}; oracle {truth.value}", refused=True)
        if mine.kind in LOGITS_KINDS:
            difference = model.within(mine.value, truth.value)
            if difference:
                return _verdict(DIVERGED, f"the model: {where(scenario, truth)}: {difference}", model, MODEL)
        elif mine.value != truth.value:
            if mine.kind != "tokens":
                return _verdict(DIVERGED, describe(scenario, mine, truth), model, STREAM)
            call = sum(event.kind == "tokens" for event in ours.events[:index])
            return judge_token_difference(impl, oracle, scenario, model, theirs, call, (mine.value, truth.value),
                                          describe(scenario, mine, truth))
    return _verdict(IDENTICAL, "", model)


def _verdict(outcome: str, detail: str, model: ModelQuestion, diverged_in: str = "", search: str = "") -> Verdict:
    return Verdict(outcome, detail, diverged_in, model.worst, model.rows, search)


def where(scenario: Scenario, event: Event) -> str:
    return "after the prompt" if event.step < 0 else f"after step {event.step} {scenario.steps[event.step]!r}"


def describe(scenario: Scenario, ours: Event | None, theirs: Event | None) -> str:
    """Where the first difference is, and what each side observed there."""
    return f"{where(scenario, ours or theirs)}: implementation {_shown(ours)}, oracle {_shown(theirs)}"


def _shown(event: Event | None) -> str:
    if event is None:
        return "observed nothing more"
    value = f"of shape {event.value.shape}" if event.kind in LOGITS_KINDS else repr(event.value)
    return f"{event.kind} {value}"


def judge_token_difference(impl: Side, oracle: Side, scenario: Scenario, model: ModelQuestion, theirs: Played,
                           call: int, tokens: tuple, difference: str) -> Verdict:
    """The tokens of generate call CALL differ (TOKENS: the implementation's and the oracle's): teacher-force
    the implementation with the oracle's logits and ask the model question and the search question (see the
    module docstring)."""
    forced = played(impl, scenario, capture_until=EVERY_CALL, replace_logits=theirs.player.captured)
    for step, (mine, truth) in enumerate(zip(forced.player.captured, theirs.player.captured)):
        beyond = model.within(mine, truth)
        if beyond:
            return _verdict(DIVERGED, f"{difference}; the model: fed the oracle's tokens, before generate call "
                                      f"{step} the implementation's {beyond}", model, MODEL)
    for index, (mine, truth) in enumerate(zip_longest(forced.events, theirs.events)):
        if mine is not None and truth is not None and mine[:2] == truth[:2] and mine.kind in LOGITS_KINDS:
            beyond = model.within(mine.value, truth.value)
            if beyond:
                return _verdict(DIVERGED, f"{difference}; the model: fed the oracle's tokens, "
                                          f"{where(scenario, truth)} the implementation's {beyond}", model, MODEL)
        elif mine != truth:
            return _verdict(DIVERGED, f"{difference}; the search: fed the oracle's logits before every choice, "
                                      f"{describe(scenario, mine, truth)}: the implementation does not choose from "
                                      "the logits as the oracle does", model, SEARCH, DIFFERS)
    margin_note = oracle_margin(oracle, scenario, model.facts, forced.player.captured, theirs, call, tokens)
    return _verdict(TIE, f"{difference}; {margin_note}; the model: fed the oracle's tokens, the implementation's "
                         f"logits stay within the bound (at most {model.worst:.2g} of it, {model.rows} rows); the "
                         "search: fed the oracle's logits, the implementation makes every choice the oracle makes",
                    model, search=SAME)


def oracle_margin(oracle: Side, scenario: Scenario, facts: ModelFacts, forced_logits: list, theirs: Played,
                  call: int, tokens: tuple) -> str:
    """How close the oracle was to the implementation's token at the first row that differs at generate call
    CALL (TOKENS: the implementation's and the oracle's there), and how much the logits differ there
    (FORCED_LOGITS: the implementation's before each call, on the oracle's history)."""
    impl_tokens, oracle_tokens = tokens
    row = next(r for r, (a, b) in enumerate(zip(impl_tokens, oracle_tokens)) if a != b)
    error = logit_error(forced_logits[call][row], theirs.player.captured[call][row])
    measured = f"row {row}: the logits differ by up to {error:.3g}"
    if scenario.num_beams > 1:
        return f"{measured} (beam search: scores summed over steps decide, no single-step margin)"
    paused = oracle.player(scenario, capture_until=call)
    paused.play()
    options = search_options(facts, scenario)
    processed = processed_logits(paused.captured[-1], paused, options, facts)                   # [R, V]
    finished = finished_rows(paused, facts)                                                      # [R]
    rng = getattr(getattr(paused.generator, "search", None), "rng", None)
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
