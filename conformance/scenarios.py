"""Scripts of generate() API calls, played on any module that offers onnxruntime-genai's Python API.

A scenario is a prompt, search options and a list of steps. `play` runs it through `og.Generator` and returns
what a caller of the API observes, event by event: the tokens of every `generate_next_token` call, the
sequences after every step, the logits a step reads, and at the end `is_done()` and the returned sequences.
Two implementations agree on a scenario when their events agree (gentwin.conformance.verdict compares them):

    play(onnxruntime_genai, peer_model, scenario) == play(gentwin.reference, reference_model, scenario)

Steps:

    ("generate", n)        generate_next_token n times, fewer if is_done() comes first
    ("finish",)            generate_next_token until is_done()
    ("append", tokens)     append_tokens: one more turn (batch 1)
    ("rewind", length)     rewind_to(length)
    ("rewind_back", k)     rewind_to(token_count() - k), but never below 1 (nothing when only 1 token is left)
    ("set_logits", pairs)  get_logits(); each (token, offset) of pairs sets that token's logit to its row's
                           highest plus offset, in every row; set_logits(). This is how a caller steers the
                           next choice; the scenarios use it to make EOS reachable.
    ("get_logits",)        record get_logits()

A Player asked to (PROMPT_LOGITS) also records every position's logits after every append, the prompt
included (get_output("logits")): the model's logits for each token of the turn, which the peer holds after a
prompt as gentwin's engines do.

Reading or setting logits once is_done() is true records nothing: there is no choice left to make.
With beam search the sequences are only read at the end (the peer finalizes its beams when one is read), and
after the other steps only token_count() is recorded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

PEER_MODULE = "onnxruntime_genai"
EVERY_CALL = math.inf  # capture_until: keep the logits before every call, never pause
LOGITS_KINDS = ("logits", "prompt_logits")
REFUSED = "refused"  # the one event of a side whose Model or Generator could not be made

Step = tuple


@dataclass(frozen=True)
class Scenario:
    name: str                         # the scenario family (gentwin.conformance.families) or a battery name
    prompt: tuple                     # rows of token ids, right-padded with pad_token_id for batch > 1
    steps: tuple
    options: dict = field(default_factory=dict)
    speculative: dict = field(default_factory=dict)  # set_speculative_options, for the sides that draft

    def without_drafts(self) -> "Scenario":
        return dataclasses.replace(self, speculative={})

    @property
    def batch_size(self) -> int:
        return len(self.prompt)

    @property
    def num_beams(self) -> int:
        return int(self.options.get("num_beams", 1))

    @property
    def returned_rows(self) -> int:
        """How many sequences get_sequence returns: num_return_sequences per batch row with beam search."""
        if self.num_beams == 1:
            return self.batch_size
        return self.batch_size * int(self.options.get("num_return_sequences", 1))


class Event(NamedTuple):
    """One observation: after step `step` (-1: the prompt), `kind` is tokens, sequences, length, logits,
    prompt_logits, done, returned, raised or refused, and `value` what was observed (logits: float32 [rows, vocab];
    prompt_logits: float32 [rows, positions, vocab], every position of an append; refused: the Model or the
    Generator could not be made, why)."""

    step: int
    kind: str
    value: object


class ModelRefused(NamedTuple):
    """What a side's Model() raised, in place of the model (see check.loaded)."""

    error: Exception


def refusal(model) -> str:
    """Why MODEL could not be loaded ("Model(): ..."), or "" for a model."""
    if isinstance(model, ModelRefused):
        return f"Model(): {type(model.error).__name__}: {model.error}"
    return ""


def feeds_pending_before_append(module) -> bool:
    """The peer (onnxruntime-genai 0.18) never runs the last generated token through the model when a turn is
    appended after generation; a get_logits() call first makes it do so (README, "Differences", 1)."""
    return module.__name__ == PEER_MODULE


class _Paused(Exception):
    """Raised inside Player.play to stop before a generate_next_token call."""


class Player:
    """One implementation's Generator driven through a scenario, and what the harness tracks beside it: where
    the reply being generated starts (presence and frequency penalties count only the reply) and what was
    generated since then (rows that generated EOS are finished and draw no random numbers).

    Two ways to look closer, for the verdict on a difference in tokens (verdict.py):
    CAPTURE_UNTIL = c   before each generate_next_token call k, keep get_logits() in `captured`; stop right
                        before call c, once its logits are kept (EVERY_CALL: never stop).
    REPLACE_LOGITS = L  before each call k < len(L), set_logits(L[k]) (after a get_logits(), which runs the
                        pending token on any implementation); stop right before call len(L).
    PROMPT_LOGITS       record a "prompt_logits" event after every append.
    """

    def __init__(self, og, model, scenario: Scenario, feed_pending_before_append: bool = False,
                 capture_until: int | None = None, replace_logits: list | None = None, prompt_logits: bool = False):
        self.scenario = scenario
        self.prompt_logits = prompt_logits
        self.feed_pending_before_append = feed_pending_before_append
        self.capture_until, self.replace_logits = capture_until, replace_logits
        self.refused = refusal(model)   # why the Model or the Generator could not be made; "" when they were
        if not self.refused:
            try:
                params = og.GeneratorParams(model)
                params.set_search_options(batch_size=scenario.batch_size, **scenario.options)
                if scenario.speculative:
                    params.set_speculative_options(**scenario.speculative)
                self.generator = og.Generator(model, params)
            except Exception as error:  # an implementation refusing the options or the model is an observation
                self.refused = f"Generator(): {type(error).__name__}: {error}"
        self.calls = 0                 # generate_next_token calls so far
        self.captured: list = []       # [calls] float32 [rows, vocab]
        self.reply_start = 0           # where the tokens generated since the last append begin
        self.generated: list = []      # [rows] next tokens of every call since the last append or rewind
        self.token_pending = False     # a generated token is in the sequences but the model has not run it

    def play(self) -> list[Event]:
        """Every event of the scenario. A call that raises ends the list with a "raised" event; a Model or
        Generator that could not be made is the one "refused" event."""
        events, step_index = [], -1
        if self.refused:
            return [Event(step_index, REFUSED, self.refused)]
        try:
            self._append(step_index, self.scenario.prompt, events)
            for step_index, step in enumerate(self.scenario.steps):
                self._run(step_index, step, events)
                events.append(self._state_event(step_index))
            done = bool(self.generator.is_done())
            returned = tuple(self._sequence(row) for row in range(self.scenario.returned_rows))
            events += [Event(step_index, "done", done), Event(step_index, "returned", returned)]
        except _Paused:
            pass
        except Exception as error:  # the API raising is an observation too
            events.append(Event(step_index, "raised", f"{type(error).__name__}: {error}"))
        return events

    def _run(self, index: int, step: Step, events: list) -> None:
        kind = step[0]
        if kind in ("generate", "finish"):
            count = step[1] if kind == "generate" else None
            while not self.generator.is_done() and (count is None or count > 0):
                self._generate(index, events)
                count = None if count is None else count - 1
        elif kind == "append":
            if self.feed_pending_before_append and self.token_pending:
                self.generator.get_logits()
            self._append(index, [step[1]], events)
        elif kind == "rewind":
            self._rewind(step[1])
        elif kind == "rewind_back":
            length = max(1, self.generator.token_count() - step[1])
            if length < self.generator.token_count():
                self._rewind(length)
        elif kind == "set_logits":
            if not self.generator.is_done():
                self.generator.set_logits(steered_logits(self.generator.get_logits(), step[1]))
                self.token_pending = False  # get_logits ran it
        elif kind == "get_logits":
            if not self.generator.is_done():
                events.append(Event(index, "logits", self.generator.get_logits()[:, 0, :].copy()))
                self.token_pending = False
        else:
            raise ValueError(f"unknown scenario step {step!r}")

    def _generate(self, index: int, events: list) -> None:
        self._before_generate()
        length = self.generator.token_count()
        self.generator.generate_next_token()
        self.calls += 1
        tokens = np.array(self.generator.get_next_tokens(), dtype=np.int64)  # [rows]
        self.generated.append(tokens)
        # The EOS that finishes the last row is not appended: then no token waits for the model
        self.token_pending = self.generator.token_count() > length
        events.append(Event(index, "tokens", tuple(int(t) for t in tokens)))

    def _before_generate(self) -> None:
        if self.capture_until is not None:
            self.captured.append(self.generator.get_logits()[:, 0, :].copy())
            if self.calls == self.capture_until:
                raise _Paused
        if self.replace_logits is not None:
            if self.calls == len(self.replace_logits):
                raise _Paused
            self.generator.get_logits()
            self.generator.set_logits(self.replace_logits[self.calls][:, None, :])

    def _append(self, index: int, rows, events: list) -> None:
        self.generator.append_tokens(np.array(rows, dtype=np.int32))
        self.reply_start = self.generator.token_count()
        self.generated, self.token_pending = [], False
        if self.prompt_logits:
            events.append(Event(index, "prompt_logits", np.array(self.generator.get_output("logits"), np.float32)))

    def _rewind(self, length: int) -> None:
        dropping = length < self.generator.token_count()  # rewinding to the current length changes nothing
        self.generator.rewind_to(length)
        if dropping:
            self.reply_start = min(self.reply_start, length)
            self.generated, self.token_pending = [], False

    def _state_event(self, index: int) -> Event:
        if self.scenario.num_beams > 1:
            return Event(index, "length", int(self.generator.token_count()))
        return Event(index, "sequences", tuple(self._sequence(row) for row in range(self.scenario.batch_size)))

    def _sequence(self, row: int) -> tuple:
        return tuple(int(t) for t in self.generator.get_sequence(row))


def steered_logits(logits, pairs) -> np.ndarray:
    """logits [rows, 1, vocab] with each (token, offset) of pairs set to its row's highest logit plus offset."""
    steered = np.array(logits, dtype=np.float32)                                 # [rows, 1, vocab]
    highest = steered.max(axis=-1)                                               # [rows, 1]
    for token, offset in pairs:
        steered[..., token] = highest + np.float32(offset)
    return steered


def logits_before_each_choice(choices: int) -> tuple:
    """Steps that read the logits, then choose a token, CHOICES times."""
    return tuple(step for _ in range(choices) for step in (("get_logits",), ("generate", 1)))


def play(og, model, scenario: Scenario, feed_pending_before_append: bool = False) -> list[Event]:
    """Play SCENARIO on MODEL (made by og.Model); return the events an API caller observes.

    FEED_PENDING_BEFORE_APPEND calls get_logits() before an append that follows generation: the peer
    (onnxruntime-genai 0.18) otherwise never runs the last generated token through the model.
    """
    return Player(og, model, scenario, feed_pending_before_append).play()


def greedy_battery(vocab_size: int, pad_token_id: int, max_length: int = 24) -> list[Scenario]:
    """The greedy scenarios issue 2 asks for: batch 1 and 2, a 3-turn chat, rewind and re-append."""
    rng = np.random.default_rng(vocab_size)
    low = max(pad_token_id + 1, 3)  # keep special ids (bos/eos/pad are small in every fixture) out of prompts

    def tokens(n):
        return [int(t) for t in rng.integers(low, vocab_size, size=n)]

    short, long = tokens(3), tokens(6)
    options = {"max_length": max_length}
    return [
        Scenario("batch1", (tokens(5),), (("finish",),), options),
        Scenario("batch2-padded", (short + [pad_token_id] * 3, long), (("finish",),), options),
        Scenario("chat-3-turns", (tokens(4),),
                 (("generate", 4), ("append", tokens(3)), ("generate", 4), ("append", tokens(2)), ("finish",)),
                 options),
        Scenario("rewind-reappend", (tokens(4),),
                 (("generate", 5), ("rewind", 6), ("append", tokens(2)), ("generate", 3), ("rewind", 4),
                  ("append", tokens(1)), ("finish",)), options),
    ]
