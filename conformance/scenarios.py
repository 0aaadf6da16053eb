"""Scripts of generate() API calls, played on any module that offers onnxruntime-genai's Python API.

A scenario is a prompt, search options and a list of steps. `play` runs it through `og.Generator` and records
every row's sequence after each step, so two implementations can be compared step by step:

    play(onnxruntime_genai, peer_model, scenario) == play(gentwin.reference, reference_model, scenario)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Steps: ("generate", n) runs generate_next_token n times (stopping early when done); ("finish",) runs it
# until is_done(); ("append", tokens) appends one more turn (batch 1); ("rewind", length) calls rewind_to;
# ("rewind_back", k) rewinds k tokens, but never below 1.
Step = tuple


@dataclass(frozen=True)
class Scenario:
    name: str
    prompt: tuple                     # rows of token ids, right-padded with pad_token_id for batch > 1
    steps: tuple
    options: dict = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return len(self.prompt)


def play(og, model, scenario: Scenario, feed_pending_before_append: bool = False) -> list:
    """Play SCENARIO on MODEL (made by og.Model); return every row's sequence after each step.

    FEED_PENDING_BEFORE_APPEND calls get_logits() before an append that follows generation: the peer
    (onnxruntime-genai 0.18) otherwise never runs the last generated token through the model.
    """
    params = og.GeneratorParams(model)
    params.set_search_options(batch_size=scenario.batch_size, **scenario.options)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(scenario.prompt, dtype=np.int32))
    snapshots, token_pending = [], False  # a generated token the model has not run yet
    for step in scenario.steps:
        kind = step[0]
        if kind in ("generate", "finish"):
            count = step[1] if kind == "generate" else None
            while not generator.is_done() and (count is None or count > 0):
                generator.generate_next_token()
                count = None if count is None else count - 1
        elif kind == "append":
            if feed_pending_before_append and token_pending:
                generator.get_logits()
            generator.append_tokens(np.array([step[1]], dtype=np.int32))
        elif kind in ("rewind", "rewind_back"):
            length = step[1] if kind == "rewind" else max(1, generator.token_count() - step[1])
            token_pending = token_pending and length == generator.token_count()  # rewinding to the length is a no-op
            generator.rewind_to(length)
        else:
            raise ValueError(f"unknown scenario step {step!r}")
        token_pending = kind in ("generate", "finish") or (kind.startswith("rewind") and token_pending)
        snapshots.append([[int(t) for t in generator.get_sequence(row)] for row in range(scenario.batch_size)])
    return snapshots


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
