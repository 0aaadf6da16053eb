"""onnxruntime_genai's Engine: many requests, each a conversation of turns, advanced together one step at a time.

    engine = og.Engine(model)
    request = engine.create_request()
    request.begin_turn(prompt_tokens, turn_options)       # queued; admitted by the next run
    events = engine.create_event_buffer(16)
    while engine.has_pending_requests():
        for event in engine.run(events):                  # one step: every admitted turn gets one token
            ...event.request, event.token, event.flags, event.finish_reason

The scheduler (Engine.run) is three moves: admit waiting turns into free slots, step every admitted turn by one
token, retire the turns that finished. Each turn runs on its own Generator over the request's whole history
(every earlier prompt and generated token, then the new prompt), so a request's stream is, token for token, the
stream of a Generator given that history alone: what the peer's Engine gives too. A turn's prompt is prefilled
in the step that admits it. The Generator is the engine's own (gentwin.reference's or gentwin.fast's Model), so
this file is shared by both engines.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from typing import NamedTuple

import numpy as np

from gentwin import api, search_options
from gentwin.errors import ArgumentValueError, GentwinError, boolean, integer, shown

# The peer's static-batch engine admits this many turns at once when genai_config.json configures no batching.
DEFAULT_MAX_BATCH_SIZE = 4


class FinishReason(enum.IntEnum):
    NONE = 0
    EOS = 1
    STOP_STRING = 2
    MAX_GENERATED_TOKENS = 3
    MAX_SESSION_TOKENS = 4
    CANCELLED = 5
    FAILED = 6


class EngineErrorCode(enum.IntEnum):
    NONE = 0
    CAPACITY_DEFERRED = 1
    EXECUTION_CAPACITY_EXCEEDED = 2
    RETRYABLE_EXECUTION = 3
    REQUEST_UNSERVICEABLE = 4
    ENGINE_CONTRACT_FAILURE = 5
    ENGINE_EXECUTION_FAILURE = 6


class EngineEventFlags(enum.IntFlag):
    NONE = 0
    TOKEN = 1
    TURN_FINISHED = 2
    CAPACITY_BLOCKED = 4
    FAILED = 8
    RETRYABLE = 16


class TurnUsage(NamedTuple):
    """Counted on a turn's last event; zeros on the others, as the peer reports them."""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_prompt_tokens: int = 0


class EngineCapabilities(NamedTuple):
    configured_max_batch_size: int
    max_request_length: int  # 0: no limit beyond each request's max_session_tokens
    max_scheduled_tokens: int  # 0: no limit on the tokens one step schedules


@dataclasses.dataclass(frozen=True)
class EngineEvent:
    request: Request
    turn_id: int
    token: int | None  # None on a last event that carries no token: EOS, or a cancelled turn
    flags: EngineEventFlags
    finish_reason: FinishReason = FinishReason.NONE
    error_code: EngineErrorCode = EngineErrorCode.NONE
    matched_stop_string_index: int | None = None
    usage: TurnUsage = TurnUsage()


class EngineEventBuffer:
    """The events of one Engine.run, at most `capacity` of them; run refills it."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.events: list[EngineEvent] = []

    def __len__(self) -> int:
        return len(self.events)

    def __getitem__(self, index: int) -> EngineEvent:
        return self.events[integer(index, "EngineEventBuffer index")]

    def __iter__(self):
        return iter(self.events)


class RequestOptions:
    def __init__(self):
        self.max_session_tokens = 0

    def set_max_session_tokens(self, max_session_tokens: int) -> None:
        """Prompt plus generated tokens over every turn; 0 is the model's search max_length."""
        value = integer(max_session_tokens, "max_session_tokens")
        if value < 0:
            raise ArgumentValueError(f"max_session_tokens must be 0 or more, got {value}")
        self.max_session_tokens = value


class TurnOptions:
    """One turn's search options; unset ones are genai_config.json's. begin_turn copies them."""

    def __init__(self, request: Request):
        api._check_instance(request, Request, "TurnOptions", "request")
        request.check_open("create Turn options for")
        self.request = request
        self.reset()

    def reset(self) -> None:
        self.search_options: dict = {}
        self.max_generated_tokens = 0  # 0: up to the request's session limit
        self.min_generated_tokens = 0

    def set_max_generated_tokens(self, count: int) -> None:
        self.max_generated_tokens = _at_least(0, count, "max_generated_tokens")

    def set_min_generated_tokens(self, count: int) -> None:
        self.min_generated_tokens = _at_least(0, count, "min_generated_tokens")

    def set_do_sample(self, do_sample: bool) -> None:
        self.search_options["do_sample"] = boolean(do_sample, "do_sample")

    def set_temperature(self, temperature: float) -> None:
        self._set_search_option("temperature", temperature)

    def set_top_k(self, top_k: int) -> None:
        self._set_search_option("top_k", top_k)

    def set_top_p(self, top_p: float) -> None:
        self._set_search_option("top_p", top_p)

    def set_repetition_penalty(self, penalty: float) -> None:
        self._set_search_option("repetition_penalty", penalty)

    def set_no_repeat_ngram_size(self, size: int) -> None:
        self._set_search_option("no_repeat_ngram_size", size)

    def set_seed(self, seed: int) -> None:
        self._set_search_option("random_seed", seed)

    def clear_seed(self) -> None:
        self.search_options.pop("random_seed", None)

    def set_stop_strings(self, stop_strings) -> None:
        raise GentwinError("TurnOptions.set_stop_strings: stop strings are not supported by gentwin's Engine yet")

    def set_guidance(self, kind: str, grammar: str) -> None:
        raise GentwinError("TurnOptions.set_guidance: guided decoding is not supported by gentwin")

    def clear_guidance(self) -> None:
        """Nothing to clear: a turn is never guided."""

    def _set_search_option(self, name: str, value) -> None:
        """The value's type is checked here, its range by begin_turn with the turn's other options."""
        self.search_options[name] = search_options.coerce_option(name, value)


def _at_least(minimum: int, value, what: str) -> int:
    value = integer(value, what)
    if value < minimum:
        raise ArgumentValueError(f"{what} must be {minimum} or more, got {value}")
    return value


class Turn:
    """One begin_turn: its prompt, its search options, and the Generator that runs it once admitted."""

    def __init__(self, request: Request, turn_id: int, prompt: np.ndarray, options: TurnOptions, max_length: int):
        """Checks the options as a Generator would, so a turn that could not run is refused by begin_turn."""
        self.request = request
        self.turn_id = turn_id
        self.prompt = prompt  # [P] the new tokens only; the request's history comes first
        model = request.engine.model
        self.params = api.GeneratorParams(model)
        self.params.set_search_options(**options.search_options, max_length=max_length, min_length=min(
            max_length, len(request.history_array()) + len(prompt) + options.min_generated_tokens))
        search_options.check_for_generator(self.params.generator_options(), model.config.context_length,
                                           model.config.vocab_size)
        self.generator: api.Generator | None = None
        self.generated = 0
        self.cancelled = False

    def admit(self) -> None:
        """Prefill happens in the first step: the Generator is given the whole history now."""
        self.generator = api.Generator(self.request.engine.model, self.params)
        self.generator.append_tokens(np.concatenate([self.request.history_array(), self.prompt]))  # [H + P]

    def step(self) -> EngineEvent:
        self.generator.generate_next_token()
        token = int(self.generator.get_next_tokens()[0])
        reason = self.finish_reason(token)
        if reason is FinishReason.EOS:  # not a token of the stream: the sequence, as a Generator's, ends before it
            return self.finished_event(None, reason)
        self.generated += 1
        if reason is FinishReason.NONE:
            return EngineEvent(self.request, self.turn_id, token, EngineEventFlags.TOKEN)
        return self.finished_event(token, reason)

    def finish_reason(self, token: int) -> FinishReason:
        if not self.generator.is_done():
            return FinishReason.NONE
        if token in self.request.engine.model.config.eos_token_ids:
            return FinishReason.EOS
        if self.generator.token_count() < self.request.max_session_tokens:
            return FinishReason.MAX_GENERATED_TOKENS
        return FinishReason.MAX_SESSION_TOKENS

    def finished_event(self, token: int | None, reason: FinishReason) -> EngineEvent:
        flags = EngineEventFlags.TURN_FINISHED | (EngineEventFlags.TOKEN if token is not None else 0)
        usage = TurnUsage(prompt_tokens=len(self.prompt), generated_tokens=self.generated)
        return EngineEvent(self.request, self.turn_id, token, flags, reason, usage=usage)

    def generated_tokens(self) -> np.ndarray:
        if self.generator is None:
            return np.zeros(0, np.int32)
        return self.generator.get_sequence(0)[-self.generated:] if self.generated else np.zeros(0, np.int32)


class Request:
    """A conversation: turns one after another, each continuing the history of those before it."""

    def __init__(self, engine: Engine, options: RequestOptions):
        self.engine = engine
        self.max_session_tokens = options.max_session_tokens or engine.default_session_tokens
        self.history: list[np.ndarray] = []  # each turn's prompt and generated tokens, in order
        self.turn_starts: dict[int, int] = {}  # turn id -> history length before it began
        self.turns_begun = 0
        self.turn: Turn | None = None  # the turn waiting or running
        self.closed = False

    def check_open(self, action: str) -> None:
        if self.closed:
            raise GentwinError(f"Cannot {action} a closed Request")

    def history_array(self) -> np.ndarray:
        return np.concatenate(self.history) if self.history else np.zeros(0, np.int32)  # [H]

    def begin_turn(self, tokens, turn_options: TurnOptions | None = None) -> int:
        self.check_open("begin a turn on")
        if self.turn is not None:
            raise GentwinError(f"Request.begin_turn: turn {self.turn.turn_id} is still running; wait for its "
                               "TURN_FINISHED event or cancel_turn it first")
        if turn_options is None:
            turn_options = TurnOptions(self)
        api._check_instance(turn_options, TurnOptions, "Request.begin_turn", "turn_options")
        if turn_options.request is not self:
            raise GentwinError("Request.begin_turn: these TurnOptions were created for another Request")
        prompt = self.engine.check_prompt(tokens)
        history_length = len(self.history_array())
        if history_length + len(prompt) >= self.max_session_tokens:
            raise ArgumentValueError(
                f"Request.begin_turn: {history_length} tokens of history and {len(prompt)} new ones leave no room "
                f"to generate within max_session_tokens {self.max_session_tokens}")
        max_length = self.max_session_tokens
        if turn_options.max_generated_tokens:
            max_length = min(max_length, history_length + len(prompt) + turn_options.max_generated_tokens)
        turn = Turn(self, self.turns_begun + 1, prompt, turn_options, max_length)
        self.turns_begun = turn.turn_id
        self.turn_starts[turn.turn_id] = len(self.history)
        self.turn = turn
        self.engine.waiting.append(turn)
        return self.turns_begun

    def cancel_turn(self, turn_id: int) -> bool:
        """True when TURN_ID was running or waiting: its last event, CANCELLED, comes with the next run."""
        turn_id = integer(turn_id, "turn_id")
        if self.turn is None or self.turn.turn_id != turn_id or self.turn.cancelled:
            return False
        self.turn.cancelled = True
        return True

    def rewind_to_start_of_turn(self, turn_id: int) -> None:
        """Forget TURN_ID and every turn after it, so the next turn continues the history before it."""
        turn_id = integer(turn_id, "turn_id")
        self.check_open("rewind")
        if self.turn is not None:
            raise GentwinError(f"Request.rewind_to_start_of_turn: turn {self.turn.turn_id} is still running")
        if turn_id not in self.turn_starts:
            raise ArgumentValueError(f"Request.rewind_to_start_of_turn: no turn {turn_id} to rewind to; "
                                     f"turns are {sorted(self.turn_starts)}")
        del self.history[self.turn_starts[turn_id]:]
        self.turn_starts = {tid: start for tid, start in self.turn_starts.items() if tid < turn_id}

    def set_draft_tokens(self, tokens) -> None:
        raise GentwinError("Request.set_draft_tokens: gentwin's Engine proposes no speculative drafts "
                           "(max_draft_tokens_per_proposal() is 0)")

    def close(self) -> None:
        """Ends the request: a running turn stops without an event, and no turn can begin."""
        if self.turn is not None:
            self.engine.forget(self.turn)
            self.turn = None
        self.closed = True

    def finish(self, turn: Turn) -> None:
        self.history += [turn.prompt, turn.generated_tokens()]
        self.turn = None


class Engine:
    """The scheduler: run() admits waiting turns, steps every admitted one by a token, retires the finished."""

    def __init__(self, model: api.Model):
        api._check_instance(model, api.Model, "Engine", "model")
        self.model = model
        self.default_session_tokens = api.GeneratorParams(model).options["max_length"]
        self.max_batch_size = DEFAULT_MAX_BATCH_SIZE
        self.waiting: deque[Turn] = deque()  # begun, not yet admitted, first come first served
        self.running: list[Turn] = []  # admitted, in admission order
        self.undelivered: deque[EngineEvent] = deque()  # events a full buffer could not take

    def create_request(self, *, options: RequestOptions | None = None) -> Request:
        if options is None:
            options = RequestOptions()
        api._check_instance(options, RequestOptions, "Engine.create_request", "options")
        return Request(self, options)

    def create_event_buffer(self, capacity: int) -> EngineEventBuffer:
        return EngineEventBuffer(_at_least(1, capacity, "capacity"))

    def get_capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(self.max_batch_size, 0, 0)

    def max_draft_tokens_per_proposal(self) -> int:
        return 0

    def get_speculative_stats(self) -> dict:
        return {}

    def has_pending_requests(self) -> bool:
        return bool(self.waiting or self.running or self.undelivered)

    def check_prompt(self, tokens) -> np.ndarray:
        prompt = api.token_array(tokens, "Request.begin_turn tokens")
        if prompt.ndim != 1:
            raise ArgumentValueError(f"Request.begin_turn: tokens must be one-dimensional, got shape {prompt.shape}")
        vocab_size = self.model.config.vocab_size
        outside = prompt[(prompt < 0) | (prompt >= vocab_size)]
        if outside.size:
            raise ArgumentValueError(f"Request.begin_turn: token {shown(int(outside[0]))} is outside the "
                                     f"vocabulary [0, {vocab_size})")
        return prompt.astype(np.int32)

    def forget(self, turn: Turn) -> None:
        if turn in self.waiting:
            self.waiting.remove(turn)
        if turn in self.running:
            self.running.remove(turn)

    def run(self, buffer: EngineEventBuffer) -> EngineEventBuffer:
        api._check_instance(buffer, EngineEventBuffer, "Engine.run", "buffer")
        if not self.undelivered:
            self.admit()
            self.undelivered.extend(self.step())
            self.retire()
        buffer.events = [self.undelivered.popleft() for _ in range(min(buffer.capacity, len(self.undelivered)))]
        return buffer

    def admit(self) -> None:
        while self.waiting and len(self.running) < self.max_batch_size:
            turn = self.waiting.popleft()
            if not turn.cancelled:
                turn.admit()
            self.running.append(turn)

    def step(self) -> list[EngineEvent]:
        return [turn.finished_event(None, FinishReason.CANCELLED) if turn.cancelled else turn.step()
                for turn in self.running]

    def retire(self) -> None:
        for turn in [turn for turn in self.running if turn.cancelled or turn.generator.is_done()]:
            self.running.remove(turn)
            turn.request.finish(turn)


ENGINE_NAMES = ["Engine", "EngineCapabilities", "EngineErrorCode", "EngineEvent", "EngineEventBuffer",
                "EngineEventFlags", "FinishReason", "Request", "RequestOptions", "TurnOptions", "TurnUsage"]
