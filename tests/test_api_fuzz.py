"""A property-based fuzz of the API on both engines: sequences of good and bad calls.

Every call either succeeds or raises a GentwinError; a call with a bad argument must be refused, naming that
argument. Each generator has a shadow, made alike, that is given only the calls the generator accepted: after
every refused call the two must be indistinguishable (token_count, every sequence, the next tokens, is_done,
and the logits of the next choice), and at the end of a run so must the tokens both generate next. The same
holds for GeneratorParams (its search options) and the Tokenizer (its options, and a stream's next text).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gentwin.errors import GentwinError
from tests.conftest import ENGINE_IDS, ENGINES, FIXTURE_MODELS, load

# llama-fp32 keeps its KV cache in one shared buffer; gpt2-fp32 has gpt2's combined past, which rewind copies.
MODELS = ["llama-fp32", "gpt2-fp32"]
MAX_LENGTH = 10
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Generator setups: greedy, seeded sampling (a refused call must not draw from the random stream), a batch.
SETUPS = [
    {"batch_size": 1},
    {"batch_size": 1, "do_sample": True, "top_k": 8, "temperature": 0.7, "random_seed": 11},
    {"batch_size": 2},
]


class Other:
    """An object of no type any method takes."""

    def __repr__(self) -> str:
        return "Other()"


class Made:
    """An argument made for the model when the call is played (`Played.resolve`): KIND and a VALUE."""

    def __init__(self, kind: str, value=None):
        self.kind, self.value = kind, value

    def __repr__(self) -> str:
        return f"Made({self.kind!r}, {self.value!r})"


# -- the calls ---------------------------------------------------------------------------------------------
# A call is (method, arguments, named): NAMED is None for a good call (which the generator's state may still
# refuse, e.g. generate_next_token at max_length), else a word the refusal must contain, naming the argument.
# Arguments that depend on the model (the vocabulary size, the rows) are Made when played.

GOOD_CALLS = st.one_of(
    st.tuples(st.just("append_tokens"),
              st.tuples(st.builds(Made, st.just("prompt"), st.lists(st.integers(0, 999), min_size=1, max_size=3))),
              st.none()),
    st.just(("generate_next_token", (), None)),
    st.tuples(st.just("rewind_to"), st.tuples(st.integers(0, MAX_LENGTH)), st.none()),
    st.just(("get_logits", (), None)),
    st.tuples(st.just("set_logits"), st.tuples(st.builds(Made, st.just("random logits"), st.integers(0, 99))),
              st.none()),
    st.just(("snapshot_and_restore", (), None)),
)

BAD_ARGUMENTS = {
    "rewind_to": ("length", [4.0, 1.5, True, np.True_, None, "1", np.float64(2.0), -1, MAX_LENGTH + 1, Other()]),
    "get_sequence": ("index", ["0", 1.0, True, None, -1, 2, np.float32(0), [0], Other()]),
    "append_tokens": ("tokens", [[[1, 2], [3]], [1.0], ["5"], [True, False], None, [], [[[1]]], Made("vocab"),
                                 [-1], [2**70], Other(), {"tokens": [1]}]),
    "set_logits": ("logits", [Made("filled", np.nan), Made("filled", np.inf), Made("filled", -np.inf),
                              Made("filled", 1e300), Made("one bad", np.nan), Made("one bad", -np.inf),
                              Made("wrong size"), Made("ints"), [[1.0, 2.0], [3.0]], "logits", None, Other()]),
    "get_output": ("name", [5, None, b"logits", ["logits"]]),
    "get_input": ("name", [5, None, ("input_ids",)]),
    "set_model_input": ("input", [("no_such_input", np.zeros(1, np.float32)), (5, np.zeros(1, np.float32)),
                                  ("input_ids", np.zeros((1, 1), np.int64))]),
    "set_active_adapter": ("adapter", [(Made("adapters"), "missing"), (Made("adapters"), 5), (Other(), "a"),
                                       (None, "a")]),
    "restore": ("snapshot", [None, "snapshot", Other(), Made("snapshot of another model")]),
    "set_inputs": ("named_tensors", [{}, None]),
}
# Arguments given as a single value rather than a tuple of arguments.
SINGLE_ARGUMENT = {"rewind_to", "get_sequence", "append_tokens", "set_logits", "get_output", "get_input", "restore",
                   "set_inputs"}



def each_method_alike(calls: list[tuple]) -> st.SearchStrategy:
    """One of CALLS, (method, ...) tuples: a method first, each as likely, then one of its calls."""
    by_method = {}
    for call in calls:
        by_method.setdefault(call[0], []).append(call)
    return st.sampled_from(sorted(by_method)).flatmap(lambda method: st.sampled_from(by_method[method]))


BAD_CALLS = each_method_alike([
    (method, value if method not in SINGLE_ARGUMENT else (value,), named)
    for method, (named, values) in BAD_ARGUMENTS.items() for value in values
])
CALLS = st.lists(st.one_of(GOOD_CALLS, BAD_CALLS), min_size=1, max_size=14)
# Every run starts from a prompt and a generated token or two, so that a rewind has tokens to drop.
PRELUDE = [("append_tokens", (Made("prompt", [5, 6, 7]),), None), ("generate_next_token", (), None)]


class Played:
    """One generator and what a call needs to build its arguments: the model, its vocabulary, its rows."""

    def __init__(self, og, model, options: dict):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=MAX_LENGTH, **options)
        self.og, self.model, self.generator = og, model, og.Generator(model, params)
        self.rows, self.vocab = options["batch_size"], model.config.vocab_size

    def resolve(self, argument):
        """A call's argument, Made for this model: a prompt of one row per sequence, logits of its size, ..."""
        if not isinstance(argument, Made):
            return argument
        kind, value = argument.kind, argument.value
        if kind == "prompt":
            return [value] * self.rows
        if kind == "vocab":
            return [self.vocab] * self.rows
        if kind == "adapters":
            return self.og.Adapters(self.model)
        if kind == "snapshot of another model":
            other_name = "llama-fp32" if self.model.config.model_type == "gpt2" else "gpt2-fp32"
            other = load(self.og.__name__, str(FIXTURE_MODELS / other_name))
            generator = self.og.Generator(other, self.og.GeneratorParams(other))
            generator.append_tokens([1, 2])
            return generator.snapshot()
        logits = np.random.default_rng(value if kind == "random logits" else 0).normal(size=(self.rows, self.vocab))
        if kind == "filled":
            return np.full((self.rows, 1, self.vocab), value)                   # float64, [R, 1, V]
        if kind == "one bad":
            logits[-1, self.vocab // 2] = value
        if kind == "wrong size":
            return np.zeros((self.rows, self.vocab + 1), np.float32)
        if kind == "ints":
            return logits.astype(np.int32)
        return logits.astype(np.float32)                                        # [R, V]

    def call(self, method: str, arguments: tuple):
        generator = self.generator
        if method == "snapshot_and_restore":  # a snapshot restored into the generator it came from
            return generator.restore(generator.snapshot())
        return getattr(generator, method)(*(self.resolve(argument) for argument in arguments))


def observed(played: Played) -> dict:
    """What a program can see of a generator without changing it."""
    generator = played.generator
    return {"token_count": generator.token_count(), "is_done": generator.is_done(),
            "next_tokens": generator.get_next_tokens().tolist(),
            "sequences": [generator.get_sequence(row).tolist() for row in range(played.rows)]}


def outcome(function):
    """(result, None) or (None, the GentwinError raised); any other exception fails the test."""
    try:
        return function(), None
    except GentwinError as error:
        return None, error


def assert_same_result(ours, shadows):
    if isinstance(ours, np.ndarray):
        np.testing.assert_array_equal(ours, shadows)
    else:
        assert type(ours) is type(shadows)


def assert_indistinguishable(played: Played, shadow: Played, when: str) -> None:
    """The observable state, then the logits of the next choice (computing them on both, as a program would)."""
    assert observed(played) == observed(shadow), when
    logits, error = outcome(played.generator.get_logits)
    shadow_logits, shadow_error = outcome(shadow.generator.get_logits)
    assert (error is None) == (shadow_error is None), (when, error, shadow_error)
    if error is None:
        np.testing.assert_array_equal(logits, shadow_logits, err_msg=when)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@FUZZ
@given(setup=st.sampled_from(SETUPS), prelude=st.integers(0, len(PRELUDE)), calls=CALLS)
def test_refused_calls_change_nothing(engine, name, setup, prelude, calls):
    model = load(engine.__name__, str(FIXTURE_MODELS / name))
    played, shadow = Played(engine, model, setup), Played(engine, model, setup)
    for index, (method, arguments, named) in enumerate(PRELUDE[:prelude] + calls):
        when = f"call {index}: {method}{arguments!r}"
        result, error = outcome(lambda: played.call(method, arguments))
        if error is None:
            assert named is None, f"{when} was accepted"
            shadow_result, shadow_error = outcome(lambda: shadow.call(method, arguments))
            assert shadow_error is None, f"{when}: the shadow refused what the generator accepted: {shadow_error}"
            assert_same_result(result, shadow_result)
            continue
        if named is not None:
            assert named in str(error), f"{when}: the refusal does not name {named!r}: {error}"
        assert_indistinguishable(played, shadow, when)
    for step in range(3):  # the tokens each generates next
        generated, error = outcome(played.generator.generate_next_token)
        shadow_generated, shadow_error = outcome(shadow.generator.generate_next_token)
        assert (error is None) == (shadow_error is None), (step, error, shadow_error)
        assert observed(played) == observed(shadow), f"generating step {step}"


# -- GeneratorParams ---------------------------------------------------------------------------------------

GOOD_OPTIONS = st.fixed_dictionaries({}, optional={
    "max_length": st.integers(1, 64), "do_sample": st.booleans(), "top_k": st.integers(0, 50),
    "top_p": st.floats(0.05, 1.0), "temperature": st.floats(0.1, 2.0), "num_beams": st.integers(1, 4),
    "random_seed": st.integers(-5, 2**31 - 1), "repetition_penalty": st.floats(0.5, 2.0),
    "logit_bias": st.dictionaries(st.integers(0, 999), st.floats(-5, 5), max_size=2),
})
# Values of the wrong type, refused as they are set. (Values out of range are refused when the Generator is
# made, as the peer refuses them: tests/test_errors.py.)
BAD_OPTIONS = st.sampled_from([
    ("do_sample", 2), ("do_sample", 1), ("do_sample", 0), ("do_sample", None), ("do_sample", "yes"),
    ("early_stopping", 1.0), ("past_present_share_buffer", np.int64(1)), ("num_beams", 1.5), ("num_beams", True),
    ("max_length", "ten"), ("max_length", float("nan")), ("max_length", float("inf")), ("batch_size", [1]),
    ("top_k", 2.5), ("temperature", True), ("temperature", "1"), ("top_p", None), ("random_seed", 1.5),
    ("logit_bias", [1, 2]), ("logit_bias", {1.5: 1.0}), ("logit_bias", {True: 1.0}), ("logit_bias", {"x": 1.0}),
    ("logit_bias", {"+-1": 1.0}), ("logit_bias", {1: float("nan")}), ("logit_bias", {1: True}),
    ("max_lenght", 10),
])


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@FUZZ
@given(calls=st.lists(st.tuples(GOOD_OPTIONS, st.none() | BAD_OPTIONS), min_size=1, max_size=6))
def test_refused_search_options_change_nothing(engine, calls):
    """A call with one bad option among good ones is refused whole, naming the bad one."""
    model = load(engine.__name__, str(FIXTURE_MODELS / "llama-fp32"))
    params, shadow = engine.GeneratorParams(model), engine.GeneratorParams(model)
    for good, bad in calls:
        options = dict(good, **dict([bad] if bad else []))
        _, error = outcome(lambda: params.set_search_options(**options))
        if bad is None:
            assert error is None, (options, error)
            shadow.set_search_options(**options)
        else:
            assert error is not None, f"{options} was accepted"
            assert bad[0] in str(error), (bad, error)
        assert params.get_search_options() == shadow.get_search_options()


# -- Tokenizer and TokenizerStream -------------------------------------------------------------------------

MESSAGES = json.dumps([{"role": "user", "content": "Hi"}])
BAD_TOKENIZER_CALLS = each_method_alike([
    ("encode", ("ab\ud800c",), "text"), ("encode", (None,), "text"), ("encode", (b"ab",), "text"),
    ("encode_batch", (["a", "\udfff"],), "texts[1]"), ("encode_batch", (None,), "texts"),
    ("encode_batch", ([],), "texts"), ("decode", ([[1, 2], [3]],), "tokens"), ("decode", ([1.5],), "tokens"),
    ("decode", ([[1, 2]],), "tokens"), ("decode", ([-1],), "tokens"), ("decode", (None,), "tokens"),
    ("decode_batch", ([1, 2],), "tokens"), ("to_token_id", (None,), "token"), ("to_token_id", ("\ud800",), "token"),
    ("update_options", ({"add_special_tokens": None},), "add_special_tokens"),
    ("update_options", ({"skip_special_tokens": True, "add_special_tokens": 1.5},), "add_special_tokens"),
    ("update_options", ({"skip_special_tokens": False, "add_special_tokens": ""},), "add_special_tokens"),
    ("update_options", ({"skip_special_tokens": False, "no_such_option": True},), "no_such_option"),
    ("apply_chat_template", ((MESSAGES,), {"template_str": 5}), "template_str"),
    ("apply_chat_template", ((MESSAGES,), {"tools": 5}), "tools"),
    ("apply_chat_template", ((MESSAGES,), {"add_generation_prompt": None}), "add_generation_prompt"),
    ("apply_chat_template", (("[" * 100_000 + "]" * 100_000,), {}), "messages"),
    ("apply_chat_template", (('{"role": "user", "content": "Hi"}',), {}), "messages"),
    ("apply_chat_template", ((json.dumps([{"role": "user", "content": "\ud800"}], ensure_ascii=False),), {}),
     "messages"),
    ("stream", (1.0,), "token"), ("stream", (True,), "token"), ("stream", (None,), "token"),
    ("stream", (-1,), "token"), ("stream", (10**6,), "token"),
])
GOOD_TOKENIZER_CALLS = st.one_of(
    st.tuples(st.just("update_options"),
              st.tuples(st.fixed_dictionaries({}, optional={"add_special_tokens": st.booleans(),
                                                            "skip_special_tokens": st.sampled_from(["false", "1"])})
                        .filter(bool)), st.none()),
    st.tuples(st.just("stream"), st.tuples(st.integers(0, 999)), st.none()),
)


class TokenizerPlayed:
    def __init__(self, model, og):
        self.tokenizer = og.Tokenizer(model)
        self.stream = self.tokenizer.create_stream()

    def call(self, method: str, arguments: tuple):
        if method == "stream":
            return self.stream.decode(*arguments)
        if method == "update_options":
            return self.tokenizer.update_options(**arguments[0])
        if method == "apply_chat_template":
            positional, keywords = arguments
            return self.tokenizer.apply_chat_template(*positional, **keywords)
        return getattr(self.tokenizer, method)(*arguments)

    def observed(self) -> tuple:
        """Encoding and decoding with the options set (BOS added or not, specials kept or not), then the
        stream's text for one more token."""
        tokenizer = self.tokenizer
        ids = tokenizer.encode("Hi there").tolist()
        return ids, tokenizer.decode(ids + [tokenizer.eos_token_ids[0].item()]), self.stream.decode(300)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@FUZZ
@given(calls=st.lists(st.one_of(GOOD_TOKENIZER_CALLS, BAD_TOKENIZER_CALLS), min_size=1, max_size=8))
def test_refused_tokenizer_calls_change_nothing(engine, calls):
    model = load(engine.__name__, str(FIXTURE_MODELS / "llama-fp32"))
    played, shadow = TokenizerPlayed(model, engine), TokenizerPlayed(model, engine)
    for method, arguments, named in calls:
        result, error = outcome(lambda: played.call(method, arguments))
        if named is None:
            assert error is None, (method, arguments, error)
            assert shadow.call(method, arguments) == result
            continue
        assert error is not None, f"{method}{arguments!r} was accepted"
        assert named in str(error), (method, arguments, error)
        assert played.observed() == shadow.observed()
