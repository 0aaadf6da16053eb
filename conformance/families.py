"""Scenario families: what `gentwin check` plays on every model, each a fixed battery plus a hypothesis strategy.

    greedy      prompts in batches of 1 to 3 right-padded rows, greedy search, with or without processors
    sampling    top-k, top-p, both, temperature, seeds, batches with padding, with or without processors
    penalties   repetition_penalty, no_repeat_ngram_size, and gentwin's presence_penalty, frequency_penalty
                and logit_bias, greedy or sampled
    min_length  min_length with EOS made likely by set_logits (or logit_bias), so min_length is what holds it
    beam        beam search: num_beams, num_return_sequences, length_penalty != 1, early_stopping; EOS is made
                likely at some steps, so hypotheses of different lengths compete and the search stops early
    chat        batch 1: turns appended after generation, rewinds, set_logits and get_logits, greedy or sampled
    logits      get_logits before every choice for 14 to 20 steps: the logits must agree within the tolerance
    speculative batch 1, a prompt that repeats itself, n-gram drafting on the implementation (sizes, widths,
                chained lookup, adaptive width, cooldown) against the oracle decoding without drafts, greedy or
                sampled, through chat turns: drafts must change nothing

Scenarios only make valid calls: appends fit in max_length (max_length is sized from the steps), and when the
peer plays, they avoid exactly its documented bugs (README, "Differences"): every rewind goes back at least 2
tokens (3: the peer refuses a rewind into its KV cache without a shared buffer) and is followed by an append
(2: the peer re-appends a dropped token when asked to generate, or for logits, right after a rewind); bug 1
is compensated in scenarios.play. gentwin's extra options are only generated when both sides accept them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from hypothesis import strategies as st

from gentwin.config import EXTRA_SEARCH_DEFAULTS
from gentwin.conformance.model_facts import ModelFacts
from gentwin.conformance.regressions import REGRESSIONS
from gentwin.conformance.scenarios import PEER_MODULE, Scenario, greedy_battery, logits_before_each_choice
from gentwin.search_options import SEARCH_DEFAULTS

MAX_PROMPT = 6       # tokens per prompt row
MAX_BATCH = 3


@dataclass(frozen=True)
class Capabilities:
    """What both sides of a check can play."""

    extras: frozenset       # gentwin's extra search options that both accept
    peer_safe: bool         # the peer plays: avoid its documented bugs
    drafts: bool = True     # the model takes n-gram drafting (not gpt2, a sliding window, a conv state)

    @classmethod
    def of(cls, sides) -> "Capabilities":
        """Probe each side (scenarios.Side-like: .module, .model) for the extra options."""
        extras = frozenset(name for name in EXTRA_SEARCH_DEFAULTS
                           if all(_accepts(side, name, EXTRA_SEARCH_DEFAULTS[name]) for side in sides))
        return cls(extras, any(side.module.__name__ == PEER_MODULE for side in sides),
                   all(_drafts(side) for side in sides))


def _accepts(side, name: str, value) -> bool:
    try:
        side.module.GeneratorParams(side.model).set_search_options(**{name: value})
    except Exception:  # the peer raises RuntimeError for an option it does not know
        return False
    return True


def _drafts(side) -> bool:
    params = side.module.GeneratorParams(side.model)
    params.set_speculative_options(ngram_size=2)
    try:
        side.module.Generator(side.model, params)
    except Exception:  # the peer refuses with a RuntimeError
        return False
    return True


@dataclass(frozen=True)
class Family:
    name: str
    strategy: Callable[[ModelFacts, Capabilities], st.SearchStrategy]  # hypothesis-generated scenarios
    from_greedy_battery: tuple = ()                                     # names of scenarios.greedy_battery

    def battery(self, facts: ModelFacts) -> list[Scenario]:
        """The fixed scenarios, played on every run: some of the greedy battery, and the family's regression
        cases whose token ids fit the model's vocabulary."""
        greedy = greedy_battery(min(facts.vocab_size, 1000), facts.pad_token_id)
        return ([s for s in greedy if s.name in self.from_greedy_battery]
                + [s for s in REGRESSIONS if s.name == self.name and _fits(s, facts)])


def _fits(scenario: Scenario, facts: ModelFacts) -> bool:
    ids = [t for row in scenario.prompt for t in row]
    ids += [t for step in scenario.steps if step[0] == "append" for t in step[1]]
    ids += [t for step in scenario.steps if step[0] == "set_logits" for t, _ in step[1]]
    return max(ids) < facts.vocab_size


# ----------------------------------------------------------------------------------------------------------------
# Building blocks


def tokens(facts: ModelFacts) -> st.SearchStrategy:
    """Ordinary token ids: no bos, eos or pad (an EOS in a prompt is legal, but says nothing new)."""
    return st.integers(3, facts.vocab_size - 1).filter(lambda token: token not in facts.special_token_ids)


@st.composite
def prompts(draw, facts: ModelFacts, max_batch: int = MAX_BATCH, min_tokens: int = 1) -> tuple:
    """A batch of prompts, right-padded with pad_token_id to the longest (the peer's convention)."""
    row = st.lists(tokens(facts), min_size=min_tokens, max_size=MAX_PROMPT)
    rows = draw(st.lists(row, min_size=1, max_size=max_batch))
    width = max(len(row) for row in rows)
    return tuple(tuple(row) + (facts.pad_token_id,) * (width - len(row)) for row in rows)


def rounded(low: float, high: float, choices: list) -> st.SearchStrategy:
    """A few telling values, or any value in [low, high] to 3 decimals."""
    return st.one_of(st.sampled_from(choices), st.floats(low, high).map(lambda value: round(value, 3)))


def sampling(facts: ModelFacts) -> st.SearchStrategy:
    """do_sample with a seed, and some of top_k, top_p, temperature (the folder's defaults otherwise)."""
    def complete(options: dict) -> dict:
        if options.get("top_k", facts.search.get("top_k", 50)) == 0 and "top_p" not in options:
            options["top_p"] = 0.9  # top_k 0 is nucleus sampling: it needs a top_p in (0, 1]
        return options

    return st.fixed_dictionaries(
        {"do_sample": st.just(True), "random_seed": st.integers(0, 2**31 - 1)},
        optional={"top_k": st.sampled_from([0, 2, 3, 5, 20, 50]),
                  "top_p": rounded(0.05, 1.0, [0.3, 0.8, 0.95, 1.0]),
                  "temperature": rounded(0.25, 2.0, [0.5, 1.0, 1.5])},
    ).map(complete)


def search(facts: ModelFacts) -> st.SearchStrategy:
    return st.one_of(st.just({}), sampling(facts))


def processors(facts: ModelFacts, capabilities: Capabilities) -> st.SearchStrategy:
    """Some of the logits processors: the peer's, and gentwin's extras where both sides accept them."""
    optional = {"repetition_penalty": rounded(0.5, 2.0, [1.0, 1.3, 0.8]),
                "no_repeat_ngram_size": st.integers(0, 3)}
    extras = {"presence_penalty": rounded(-1.0, 2.0, [0.0, 0.5, 1.5]),
              "frequency_penalty": rounded(-0.5, 1.5, [0.0, 0.4, 1.0]),
              "logit_bias": st.dictionaries(tokens(facts), rounded(-10.0, 10.0, [-5.0, 3.0]), max_size=3)}
    optional.update({name: strategy for name, strategy in extras.items() if name in capabilities.extras})
    return st.fixed_dictionaries({}, optional=optional)


def room(prompt: tuple, steps: tuple) -> int:
    """The most tokens the steps can add to the prompt (rewinds only take away)."""
    added = sum(step[1] if step[0] == "generate" else len(step[1]) if step[0] == "append" else 0 for step in steps)
    return len(prompt[0]) + added


@st.composite
def scenario(draw, name: str, facts: ModelFacts, prompt, steps, options, spare=st.integers(0, 8)) -> Scenario:
    """A Scenario whose max_length fits what its steps add, plus some spare room for ("finish",)."""
    prompt, steps, options = draw(prompt), draw(steps), draw(options)
    max_length = min(facts.context_length, room(prompt, steps) + draw(spare))
    return Scenario(name, prompt, steps, {**options, "max_length": max_length})


def merged(*strategies) -> st.SearchStrategy:
    return st.tuples(*strategies).map(lambda dicts: {key: value for d in dicts for key, value in d.items()})


def eos(facts: ModelFacts) -> st.SearchStrategy:
    return st.sampled_from(facts.eos_token_ids)


def steer(facts: ModelFacts, offsets: list) -> st.SearchStrategy:
    """A set_logits step putting an EOS id at OFFSET from its row's highest logit."""
    return st.tuples(eos(facts), st.sampled_from(offsets)).map(lambda pair: ("set_logits", (pair,)))


# ----------------------------------------------------------------------------------------------------------------
# The families


def greedy_scenarios(facts, capabilities):
    return scenario("greedy", facts, prompts(facts), st.just((("finish",),)), processors(facts, capabilities),
                    spare=st.integers(6, 16))


def sampling_scenarios(facts, capabilities):
    return scenario("sampling", facts, prompts(facts), st.just((("finish",),)),
                    merged(sampling(facts), processors(facts, capabilities)), spare=st.integers(6, 16))


def penalties_scenarios(facts, capabilities):
    chosen = processors(facts, capabilities).filter(
        lambda options: any(value != SEARCH_DEFAULTS[name] for name, value in options.items()))
    return scenario("penalties", facts, prompts(facts), st.just((("finish",),)), merged(search(facts), chosen),
                    spare=st.integers(6, 16))


@st.composite
def min_length_scenarios(draw, facts, capabilities):
    """EOS is put at or above the top before each choice (or biased up), so it is chosen as soon as
    min_length allows; the sequence must end exactly there."""
    prompt = draw(prompts(facts, max_batch=2))
    held = draw(st.integers(1, 8))                     # choices during which min_length holds EOS back
    options = {**draw(search(facts)), "min_length": len(prompt[0]) + held}
    choices = held + draw(st.integers(1, 4))
    if "logit_bias" in capabilities.extras and draw(st.booleans()):
        options["logit_bias"] = {draw(eos(facts)): 30.0}
        steps = (("generate", choices),)
    else:
        steps = tuple(step for _ in range(choices) for step in (draw(steer(facts, [0.0, 1.0, 4.0])), ("generate", 1)))
    return Scenario("min_length", prompt, steps, {**options, "max_length": len(prompt[0]) + choices + 2})


@st.composite
def beam_scenarios(draw, facts, capabilities):
    """Beam search with EOS pushed near the top at some steps: hypotheses of different lengths, scored with a
    length_penalty other than 1, fill up, and with early_stopping the search ends before max_length."""
    num_beams = draw(st.integers(2, 4))
    options = {"num_beams": num_beams,
               "num_return_sequences": draw(st.integers(1, num_beams)),
               "length_penalty": draw(rounded(0.2, 3.0, [0.5, 2.0]).filter(lambda value: value != 1.0)),
               "early_stopping": draw(st.booleans()),
               **draw(st.fixed_dictionaries({}, optional={"repetition_penalty": rounded(0.5, 2.0, [1.3]),
                                                          "no_repeat_ngram_size": st.integers(1, 3)}))}
    pushes = st.one_of(steer(facts, [-3.0, -1.5, -0.5, 0.0, 0.5]), st.none())
    steered = draw(st.lists(pushes, min_size=1, max_size=10))
    steps = tuple(step for push in steered for step in ((push,) if push else ()) + (("generate", 1),))
    prompt = draw(prompts(facts, max_batch=2))
    max_length = len(prompt[0]) + len(steered) + draw(st.integers(0, 6))
    return Scenario("beam", prompt, steps + (("finish",),), {**options, "max_length": max_length})


def chat_turns(facts: ModelFacts, capabilities: Capabilities) -> st.SearchStrategy:
    """Batch-1 turns. With the peer, a rewind goes back 2 or more and an append follows it at once."""
    turn = tokens(facts)
    append = st.tuples(st.just("append"), st.lists(turn, min_size=1, max_size=4).map(tuple))
    if capabilities.peer_safe:
        rewind = st.tuples(st.tuples(st.just("rewind_back"), st.integers(2, 8)), append)
    else:
        rewind = st.tuples(st.tuples(st.just("rewind_back"), st.integers(1, 8)))
    logits_pair = st.tuples(st.one_of(turn, eos(facts)), st.sampled_from([-2.0, 0.0, 2.0]))
    single = st.one_of(
        st.tuples(st.just("generate"), st.integers(1, 6)),
        append,
        st.tuples(st.just("set_logits"), st.lists(logits_pair, min_size=1, max_size=2).map(tuple)),
        st.just(("get_logits",)),
    ).map(lambda step: (step,))
    return st.lists(st.one_of(single, rewind), min_size=1, max_size=7).map(
        lambda turns: tuple(step for t in turns for step in t) + (("generate", 4),))


def chat_scenarios(facts, capabilities):
    # Two prompt tokens at least: a rewind to 1 then stays below what the peer's KV cache holds (bug 3)
    return scenario("chat", facts, prompts(facts, max_batch=1, min_tokens=2), chat_turns(facts, capabilities),
                    merged(search(facts), processors(facts, capabilities)))


@st.composite
def logits_scenarios(draw, facts, capabilities):
    prompt = draw(prompts(facts, max_batch=2))
    choices = draw(st.integers(14, 20))
    return Scenario("logits", prompt, logits_before_each_choice(choices),
                    {**draw(search(facts)), "max_length": len(prompt[0]) + choices})


def drafting(capabilities: Capabilities) -> st.SearchStrategy:
    """set_speculative_options: n-gram size, width, chained lookup, adaptive width, cooldown; none where the
    model cannot draft (the scenario then checks plain decoding)."""
    if not capabilities.drafts:
        return st.just({})
    return st.fixed_dictionaries({"ngram_size": st.integers(2, 4), "max_draft_tokens": st.integers(1, 8)},
                                 optional={"ngram_chained_lookup": st.booleans(),
                                           "min_adaptive_k": st.integers(0, 3), "cooldown": st.booleans()})


@st.composite
def repeating_prompt(draw, facts: ModelFacts) -> tuple:
    """One row: a few tokens, said two or three times, so the n-gram index finds drafts at once."""
    phrase = draw(st.lists(tokens(facts), min_size=2, max_size=4))
    return (tuple(phrase * draw(st.integers(2, 3))),)


@st.composite
def speculative_scenarios(draw, facts, capabilities):
    # The peer's speculative rounds refuse get_logits at some points ("Speculative decoding logits are not
    # available at the current generation state", README, "Differences"), and the harness reads them before
    # an append to the peer (bug 1): with the peer, the scenario generates to the end.
    finish = st.just((("finish",),))
    steps = draw(finish if capabilities.peer_safe else st.one_of(finish, chat_turns(facts, capabilities)))
    # and its verification rows skip no_repeat_ngram_size (README, "Differences"): not with the peer either.
    chosen = processors(facts, capabilities).map(
        lambda options: {name: value for name, value in options.items()
                         if not (capabilities.peer_safe and name == "no_repeat_ngram_size")})
    base = draw(scenario("speculative", facts, repeating_prompt(facts), st.just(steps),
                         merged(search(facts), chosen), spare=st.integers(6, 16)))
    return dataclasses.replace(base, speculative=draw(drafting(capabilities)))


FAMILIES = [
    Family("greedy", greedy_scenarios, ("batch1", "batch2-padded")),
    Family("sampling", sampling_scenarios),
    Family("penalties", penalties_scenarios),
    Family("min_length", min_length_scenarios),
    Family("beam", beam_scenarios),
    Family("chat", chat_scenarios, ("chat-3-turns", "rewind-reappend")),
    Family("logits", logits_scenarios),
    Family("speculative", speculative_scenarios),
]
