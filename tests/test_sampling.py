"""Both engines' token choice against onnxruntime-genai 0.18.0, live, on logits the test controls.

The protocol that puts our logits under the peer's sampler: append_tokens (which computes logits) or
get_logits (which runs the model for the pending token), then set_logits([batch, vocab]) to overwrite them,
then generate_next_token(). The peer applies min_length, repetition_penalty and no_repeat_ngram_size to the
logits we set, against its own token history, so both sides keep the same history.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from gentwin import search_options
from gentwin.fast import penalties as fast_penalties
from gentwin.fast import sampling as fast_sampling
from gentwin.reference import cpp_arithmetic, penalties, sampling
from tests.conftest import load, shared_model
from tests.device_standin import standin_cupy

og = pytest.importorskip("onnxruntime_genai", reason="the peer, onnxruntime-genai 0.18.0, is not installed")

MODEL = "tiny-llama-fp32"  # vocab 1024, eos 1, pad 2
VOCAB, EOS, PAD = 1024, 1, 2  # the stub models below share the EOS id
PROMPT = [5, 6, 7, 5, 6]  # repeats, so the penalties have history to act on
LOGIT_KINDS = ["normal", "ties", "peaked", "flat", "near_flat", "huge", "float_range", "two_level", "history"]


def make_logits(kind: str, seed: int, history, vocab: int = VOCAB, rows: int = 1) -> np.ndarray:
    """Logits float32 [rows, vocab] of a given character; 'history' boosts tokens already in the sequence
    (and EOS) so that the penalties change the answer."""
    rng = np.random.default_rng(seed)
    shape = (rows, vocab)
    if kind == "normal":
        return rng.normal(0, 3, shape).astype(np.float32)
    if kind == "ties":  # a handful of values: every cut falls inside a run of equal logits
        return rng.integers(-3, 4, shape).astype(np.float32)
    if kind == "peaked":  # one token takes ~all the mass: a top_k_top_p cut keeps it alone
        logits = rng.normal(0, 1, shape).astype(np.float32)
        logits[np.arange(rows), rng.integers(0, vocab, rows)] += 25
        return logits
    if kind == "flat":  # all equal: which tokens are "best" is decided by the peer's heap order alone
        return np.zeros(shape, np.float32)
    if kind == "near_flat":
        return rng.normal(0, 1e-3, shape).astype(np.float32)
    if kind == "huge":
        return rng.uniform(-1e4, 1e4, shape).astype(np.float32)
    if kind == "float_range":  # differences overflow float32 to -inf: exp gives 0 on both sides
        return (rng.uniform(-1, 1, shape) * 3e38).astype(np.float32)
    if kind == "two_level":
        return (rng.integers(0, 2, shape) * 0.5).astype(np.float32)
    logits = rng.normal(0, 2, shape).astype(np.float32)  # "history"
    boosted = rng.choice(np.append(np.unique(history), EOS), size=3)
    logits[:, boosted] = logits.max() + rng.choice([0.0, 0.5, 4.0], size=3).astype(np.float32)
    return logits


def peer_generator(options: dict, prompt, model_path=None):
    model = load("onnxruntime_genai", str(model_path or shared_model(MODEL)))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=64, batch_size=len(prompt), **options)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(prompt, dtype=np.int32))
    return generator


def peer_step(generator, logits, first: bool) -> np.ndarray:
    if not first:
        generator.get_logits()  # runs the model for the pending token; set_logits refuses until then
    generator.set_logits(logits)
    generator.generate_next_token()
    return generator.get_next_tokens().copy()


SAMPLERS = (sampling, fast_sampling)  # the reference's exact sampler and the fast engine's vectorised one


def play_both(options: dict, steps, model_path=None, vocab: int = VOCAB, prompt=PROMPT) -> None:
    """Feed the same logits to the peer and to gentwin step by step; the chosen tokens and the sequences
    must stay identical. Stops at EOS (batch 1: the peer is then done and does not append the EOS)."""
    generator = peer_generator(options, [prompt], model_path)
    samplers = {sampler: sampling.make_rng(options.get("random_seed", -1)) for sampler in SAMPLERS}
    device_rng = sampling.make_rng(options.get("random_seed", -1))
    sequences = np.array([prompt], np.int32)  # [1, length]
    for index, (kind, seed) in enumerate(steps):
        logits = make_logits(kind, seed, sequences[0], vocab)  # [1, vocab]
        peer = peer_step(generator, logits, first=index == 0)
        processed = logits.copy()
        penalties.process_logits(processed, sequences, options, [EOS], prompt_length=len(prompt))
        for sampler, rng in samplers.items():
            ours = sampler.choose_next_tokens(processed, options, rng)
            assert ours.tolist() == peer.tolist(), f"{sampler.__name__}: step {index} ({kind}, seed {seed})"
        with standin_cupy() as device:  # the fast engine's GPU path: processors and sampler on device logits
            on_device = device.asarray(logits)
            fast_penalties.process_logits(on_device, sequences, options, [EOS], prompt_length=len(prompt))
            assert on_device.get().tobytes() == processed.tobytes(), f"device processors: step {index}"
            ours = fast_sampling.choose_next_tokens(on_device, options, device_rng)
            assert ours.tolist() == peer.tolist(), f"device sampler: step {index} ({kind}, seed {seed})"
        if peer[0] == EOS:
            return
        sequences = np.concatenate([sequences, ours[:, None]], axis=1)  # [1, length + 1]
        assert list(generator.get_sequence(0)) == sequences[0].tolist()


temperatures = st.sampled_from([1.0, 0.5, 2.0, 0.05, 10.0]) | st.floats(0.01, 100.0)
top_ks = st.sampled_from([2, 5, 50, VOCAB]) | st.integers(2, VOCAB)
top_ps = st.sampled_from([0.05, 0.5, 0.9, 0.99]) | st.floats(0.001, 0.999)
sampled = st.one_of(
    st.fixed_dictionaries({"top_k": top_ks, "top_p": st.sampled_from([0.0, 1.0])}),  # top_k
    st.fixed_dictionaries({"top_k": st.just(0), "top_p": top_ps | st.just(1.0)}),  # top_p
    st.fixed_dictionaries({"top_k": top_ks, "top_p": top_ps}),  # top_k_top_p
).map(lambda method: {"do_sample": True, **method})
greedy = st.sampled_from(
    [{"do_sample": False}, {"do_sample": True, "top_k": 1}, {"do_sample": True, "temperature": 0.0}]
)
peer_penalties = st.fixed_dictionaries(
    {},
    optional={
        "repetition_penalty": st.sampled_from([0.5, 1.3, 2.0]) | st.floats(0.1, 3.0),
        "min_length": st.integers(0, 12),
        "no_repeat_ngram_size": st.integers(1, 3),
    },
)


@st.composite
def search_option_sets(draw):
    options = draw(sampled | greedy)
    options.setdefault("temperature", draw(temperatures))
    options["random_seed"] = draw(st.integers(0, 2**31 - 1))
    return {**options, **draw(peer_penalties)}


steps_strategy = st.lists(st.tuples(st.sampled_from(LOGIT_KINDS), st.integers(0, 2**32 - 1)), min_size=1, max_size=10)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(options=search_option_sets(), steps=steps_strategy)
@example(  # all 1024 logits equal: top_k's 5 are whatever libstdc++'s heap select leaves on top
    options={"do_sample": True, "top_k": 5, "top_p": 0.0, "temperature": 1.0, "random_seed": 1}, steps=[("flat", 0)] * 6
)
@example(  # nucleus of everything (top_p 1) over ties, with a full 1024-token partial sort
    options={"do_sample": True, "top_k": 0, "top_p": 1.0, "temperature": 1.0, "random_seed": 7}, steps=[("ties", 3)] * 6
)
@example(  # single-token cuts draw nothing: the stream must stay aligned across the flat steps between them
    options={"do_sample": True, "top_k": 20, "top_p": 0.5, "temperature": 0.5, "random_seed": 11},
    steps=[("peaked", 1), ("near_flat", 2), ("peaked", 3), ("two_level", 4), ("peaked", 5), ("normal", 6)],
)
@example(  # FindNucleus's loose tail bound: a token with ~all the mass still comes with a second one
    options={"do_sample": True, "top_k": 0, "top_p": 0.5, "temperature": 0.5, "random_seed": 11},
    steps=[("peaked", 1), ("near_flat", 2), ("peaked", 3), ("two_level", 4), ("peaked", 5), ("normal", 6)],
)
@example(  # top_k == vocab with a nucleus cut, tiny temperature
    options={"do_sample": True, "top_k": VOCAB, "top_p": 0.9, "temperature": 0.05, "random_seed": 3},
    steps=[("normal", 8), ("huge", 9), ("float_range", 10)],
)
@example(  # the penalties against the history: EOS banned by min_length then -inf by the repetition penalty
    options={
        "do_sample": True, "top_k": 50, "top_p": 0.0, "temperature": 1.0, "random_seed": 5,
        "repetition_penalty": 2.0, "min_length": 12, "no_repeat_ngram_size": 2,
    },
    steps=[("history", seed) for seed in range(10)],
)
@example(  # greedy with the penalties: ties go to the lowest id
    options={
        "do_sample": False, "temperature": 1.0, "random_seed": 0, "repetition_penalty": 1.3, "no_repeat_ngram_size": 1,
    },
    steps=[("ties", 1), ("history", 2), ("flat", 3), ("history", 4)],
)
def test_chosen_tokens_match_the_peer(options, steps):
    play_both(options, steps)


def build_stub_model(folder, vocab: int):
    """A model folder the peer loads, of any vocabulary size: a llama-typed decoder with one KV head of width 1
    whose logits are all zero. The tests overwrite its logits anyway; the point is vocabularies the shared
    models lack (at most 64 tokens: FindNucleus's exact pass; 65; thousands: more sorting rounds)."""
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids", "zero"], ["zeros"]),  # [batch, seq]
        helper.make_node("Unsqueeze", ["zeros", "axes_1_3"], ["new_kv"]),  # [batch, 1, seq, 1]
        helper.make_node("Concat", ["past_key_values.0.key", "new_kv"], ["present.0.key"], axis=2),
        helper.make_node("Concat", ["past_key_values.0.value", "new_kv"], ["present.0.value"], axis=2),
        helper.make_node("Unsqueeze", ["zeros", "axis_2"], ["zeros_3d"]),  # [batch, seq, 1]
        helper.make_node("Add", ["zeros_3d", "zero_row"], ["logits"]),  # [batch, seq, vocab]
    ]
    constants = [
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("axes_1_3", TensorProto.INT64, [2], [1, 3]),
        helper.make_tensor("axis_2", TensorProto.INT64, [1], [2]),
        helper.make_tensor("zero_row", TensorProto.FLOAT, [vocab], np.zeros(vocab)),
    ]

    def kv(name, length):  # [batch, 1 head, length, head size 1]
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1, length, 1])

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
        kv("past_key_values.0.key", "past"),
        kv("past_key_values.0.value", "past"),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab]),
        kv("present.0.key", "total"),
        kv("present.0.value", "total"),
    ]
    graph = helper.make_graph(nodes, "stub", inputs, outputs, constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(folder / "model.onnx"))
    decoder = {
        "filename": "model.onnx", "head_size": 1, "hidden_size": 1, "num_attention_heads": 1,
        "num_hidden_layers": 1, "num_key_value_heads": 1,
    }
    config = {
        "model": {
            "type": "llama", "vocab_size": vocab, "context_length": 128,
            "bos_token_id": 0, "eos_token_id": EOS, "pad_token_id": 0, "decoder": decoder,
        },
        "search": {"max_length": 128, "past_present_share_buffer": False},
    }
    (folder / "genai_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def stub_model(tmp_path_factory):
    built = {}

    def folder_for(vocab: int):
        if vocab not in built:
            built[vocab] = build_stub_model(tmp_path_factory.mktemp(f"vocab{vocab}"), vocab)
        return built[vocab]

    return folder_for


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vocab=st.sampled_from([2, 3, 16, 17, 64, 65, 300, 5000]), options=search_option_sets(), steps=steps_strategy)
def test_chosen_tokens_match_the_peer_at_other_vocabulary_sizes(stub_model, vocab, options, steps):
    options = {**options, "top_k": min(options.get("top_k", 0), vocab)}
    play_both(options, steps, stub_model(vocab), vocab, prompt=[0, EOS, 0])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    options=st.tuples(sampled, peer_penalties).map(lambda pair: {**pair[0], **pair[1], "temperature": 1.0}),
    seed=st.integers(0, 2**31 - 1),
    eos_step=st.integers(0, 3),
    eos_row=st.integers(0, 1),
)
def test_batch_rows_share_one_stream_and_finished_rows_draw_nothing(options, seed, eos_step, eos_row):
    """Rows draw in order from one engine; once a row has produced EOS it gets the pad token and no draw."""
    options = {**options, "random_seed": seed}
    prompt = [[5, 6, 7], [PAD, 8, 9]]
    generator = peer_generator(options, prompt)
    samplers = {sampler: sampling.make_rng(seed) for sampler in SAMPLERS}
    sequences = np.array(prompt, np.int32)  # [2, length]
    finished = np.zeros(2, bool)  # [2]
    for index in range(8):
        logits = make_logits("normal", seed + index, sequences, rows=2)  # [2, VOCAB]
        if index == eos_step:
            logits[eos_row, EOS] = 100
        peer = peer_step(generator, logits, first=index == 0)
        processed = logits.copy()
        penalties.process_logits(processed, sequences, options, [EOS], prompt_length=3)
        for sampler, rng in samplers.items():
            ours = sampler.choose_next_tokens(processed, options, rng, finished=finished, pad_token_id=PAD)
            assert ours.tolist() == peer.tolist(), f"{sampler.__name__}: step {index}"
        finished |= ours == EOS
        if finished.all():
            return
        sequences = np.concatenate([sequences, ours[:, None]], axis=1)  # [2, length + 1]
        assert [list(generator.get_sequence(row)) for row in range(2)] == sequences.tolist()


def two_token_logits(x) -> np.ndarray:
    """[1, VOCAB]: token 0 at x, token 1 at 0, every other token far below both."""
    logits = np.full((1, VOCAB), -1e30, np.float32)
    logits[0, :2] = [x, 0.0]
    return logits


def flip_point(options: dict) -> tuple[np.float32, np.float32]:
    """Adjacent float32 values lo < hi of token 0's logit where gentwin's first draw switches from token 1 to
    token 0: there the draw lies within one float32 step of the boundary between the two tokens."""

    def choose(x):
        return sampling.choose_next_tokens(two_token_logits(x), options, sampling.make_rng(options["random_seed"]))

    lo, hi = np.float32(-60), np.float32(60)
    assert choose(lo)[0] == 1 and choose(hi)[0] == 0
    while np.nextafter(lo, hi) != hi:
        middle = np.float32((float(lo) + float(hi)) / 2)
        middle = middle if lo < middle < hi else np.nextafter(lo, hi)
        lo, hi = (lo, middle) if choose(middle)[0] == 0 else (middle, hi)
    return lo, hi


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    temperature=st.sampled_from([1.0, 0.7, 0.3, 3.0]),
    method=st.sampled_from([{"top_k": 2, "top_p": 0.0}, {"top_k": 0, "top_p": 1.0}, {"top_k": 5, "top_p": 0.9999}]),
)
def test_knife_edge_draws_match_the_peer(seed, temperature, method):
    """Random logits almost never notice a one-ulp slip in exp, in the temperature or in a normalisation; a
    draw on the knife edge between two tokens does (dividing by the temperature instead of multiplying by its
    inverse, numpy's float32 exp, skipping the renormalisation or a float generate_canonical all fail here)."""
    options = {"do_sample": True, "temperature": temperature, "random_seed": seed, **method}
    lo, hi = flip_point(options)
    for x in [np.nextafter(lo, np.float32(-np.inf)), lo, hi, np.nextafter(hi, np.float32(np.inf))]:
        generator = peer_generator(options, [PROMPT])
        peer = peer_step(generator, two_token_logits(x), first=True)
        for sampler in SAMPLERS:
            ours = sampler.choose_next_tokens(two_token_logits(x), options, sampling.make_rng(seed))
            assert ours.tolist() == peer.tolist(), f"{sampler.__name__}: token 0's logit {x!r}"


def test_each_sampled_token_draws_twice_and_the_stream_runs_on():
    """One engine per Generator; a token from a distribution of two or more draws two 32-bit words, a token
    from a single-token nucleus draws none. Alternating the two only agrees with the peer if both hold."""
    options = {"do_sample": True, "top_k": 50, "top_p": 0.5, "temperature": 1.0, "random_seed": 42}
    counted = {sampler: CountingRng(sampling.make_rng(42)) for sampler in SAMPLERS}
    generator = peer_generator(options, [PROMPT])
    draws_expected = 0
    for index in range(12):
        kind = "peaked" if index % 2 else "near_flat"
        logits = make_logits(kind, index, PROMPT)
        peer = peer_step(generator, logits, first=index == 0)
        kept, _ = sampling.top_k_distribution(logits[0], 50, np.float32(1.0), np.float32(0.5))
        draws_expected += 2 if len(kept) > 1 else 0
        for sampler, rng in counted.items():
            assert sampler.choose_next_tokens(logits, options, rng).tolist() == peer.tolist(), sampler.__name__
            assert rng.draws == draws_expected, sampler.__name__
    assert 0 < draws_expected < 24


def test_a_nucleus_complete_on_a_rounds_last_token_grows_by_one():
    """FindNucleus's quirk, live: 16 tied best tokens reach top_p = 1/64 exactly on the 16th, the last token of
    the first sorting round, and the peer's loop goes on and adds a 17th; which of the 1008 tied runners-up
    that is, libstdc++'s heap decides (token 54). An exact nucleus would never yield it."""
    options = {"do_sample": True, "top_k": 0, "top_p": 1 / 64, "temperature": 1.0, "random_seed": 4}
    logits = np.full((1, VOCAB), -0.01, np.float32)  # [1, VOCAB]
    logits[0, 100:116] = 0
    generator = peer_generator(options, [PROMPT])
    peer = [peer_step(generator, logits, first=step == 0)[0] for step in range(40)]
    for sampler in SAMPLERS:
        rng = sampling.make_rng(4)
        ours = [sampler.choose_next_tokens(logits, options, rng)[0] for _ in range(40)]
        assert ours == peer, sampler.__name__
    assert 54 in peer


def test_the_set_logits_protocol():
    """set_logits takes [batch, vocab] (or any array of batch * vocab floats) and copies it; it is refused right
    after generate_next_token until get_logits() has run the model; get_logits is [batch, 1, vocab]."""
    generator = peer_generator({"min_length": 10, "repetition_penalty": 2.0}, [PROMPT])
    assert generator.get_logits().shape == (1, 1, VOCAB)
    logits = np.zeros((1, VOCAB), np.float32)
    logits[0, [EOS, 5, 8]] = [10.0, 9.0, 8.0]
    generator.set_logits(logits)
    generator.generate_next_token()
    # EOS banned by min_length, 5 (in the prompt) halved to 4.5 by the repetition penalty: 8 wins
    assert generator.get_next_tokens().tolist() == [8]
    assert logits[0, [EOS, 5, 8]].tolist() == [10.0, 9.0, 8.0], "the peer copies what it is given"
    with pytest.raises(Exception, match="not computed"):
        generator.set_logits(logits)
    generator.get_logits()
    generator.set_logits(logits.reshape(1, 1, VOCAB))
    generator.generate_next_token()
    assert generator.get_next_tokens().tolist() == [5]  # 5 -> 4.5 beats 8 -> 4 now that 8 is in the history


# ----------------------------------------------------------------------------------------------------------------
# Options


@pytest.mark.parametrize(
    "options, method",
    [
        ({"do_sample": False, "top_k": 5}, "greedy"),
        ({"do_sample": True, "top_k": 1, "top_p": 0.5}, "greedy"),
        ({"do_sample": True, "top_k": 50, "temperature": 0.0}, "greedy"),
        ({"do_sample": True, "top_k": 50, "temperature": 1e-50}, "greedy"),  # 0 once stored as float32
        ({"do_sample": True, "top_k": 50, "top_p": 0.0}, "top_k"),
        ({"do_sample": True, "top_k": 50, "top_p": 1.0}, "top_k"),
        ({"do_sample": True, "top_k": 50, "top_p": 0.999999999}, "top_k"),  # 1 once stored as float32
        ({"do_sample": True, "top_k": 50, "top_p": 0.9}, "top_k_top_p"),
        ({"do_sample": True, "top_k": 0, "top_p": 0.9}, "top_p"),
        ({"do_sample": True, "top_k": 0, "top_p": 1.0}, "top_p"),
        ({"do_sample": True}, "top_k"),  # the peer's defaults: top_k 50, top_p 0
    ],
)
def test_sampling_method(options, method):
    assert search_options.sampling_method(options) == method


@pytest.mark.parametrize(
    "options, named, the_peer_refuses",
    [
        ({"top_k": -1}, "top_k", True),
        ({"top_k": VOCAB + 1}, "top_k", True),
        ({"top_k": 0, "top_p": 1.5}, "top_p", True),
        ({"top_k": 50, "top_p": -0.1}, "top_p", True),
        ({"top_k": 0, "top_p": 0.0}, "top_p", False),  # gentwin's own: the peer picks its first-sorted token
        ({"top_k": 50, "temperature": -1.0}, "temperature", False),  # gentwin's own: the peer inverts the ranking
    ],
)
def test_invalid_sampling_options_are_refused_naming_the_option(stub_model, options, named, the_peer_refuses):
    options = {"do_sample": True, **options}
    with pytest.raises(ValueError, match=named):
        search_options.validate_sampling_options(options, VOCAB)
    if the_peer_refuses:
        with pytest.raises(RuntimeError, match=named):
            peer_generator(options, [[0, EOS, 0]], stub_model(VOCAB))


def test_greedy_ignores_the_sampling_options_as_the_peer_does():
    search_options.validate_sampling_options({"do_sample": False, "top_k": -1, "top_p": 7.0, "temperature": -3.0}, VOCAB)
    search_options.validate_sampling_options({"do_sample": True, "top_k": 1, "top_p": 7.0}, VOCAB)
    search_options.validate_sampling_options({"do_sample": True, "top_k": 50, "top_p": 0.0}, VOCAB)  # top_p 0: no cut


# ----------------------------------------------------------------------------------------------------------------
# gentwin's extras, by hand


def test_presence_frequency_and_logit_bias_by_hand():
    logits = np.array([[1.0, 2.0, -1.0, 0.5, 3.0]], np.float32)
    sequences = np.array([[4, 0, 1, 1, 3]], np.int32)  # prompt [4, 0], generated [1, 1, 3]
    options = {"presence_penalty": 0.5, "frequency_penalty": 0.25}
    bias = {0: 2.0, 2: -1.5}
    penalties.process_logits(logits, sequences, options, eos_token_ids=[], prompt_length=2, logit_bias=bias)
    # token 1 twice: 2 - (0.5 + 2 * 0.25); token 3 once: 0.5 - (0.5 + 0.25); tokens 0 and 4 only in the prompt
    np.testing.assert_array_equal(logits, [[1.0 + 2.0, 1.0, -1.0 - 1.5, -0.25, 3.0]])


def test_the_extras_come_after_the_peers_processors():
    logits = np.array([[1.0, 2.0, -1.0, 0.5, 3.0]], np.float32)
    sequences = np.array([[4, 0, 1, 1, 3]], np.int32)
    options = {"repetition_penalty": 2.0, "presence_penalty": 0.5, "frequency_penalty": 0.25}
    bias = {0: 2.0, 2: -1.5}
    penalties.process_logits(logits, sequences, options, eos_token_ids=[], prompt_length=2, logit_bias=bias)
    # repetition over prompt and generated alike (0, 1, 3, 4 halved), then the extras over the generated
    np.testing.assert_array_equal(logits, [[0.5 + 2.0, 1.0 - 1.0, -1.0 - 1.5, 0.25 - 0.75, 1.5]])


def test_the_extras_are_off_by_default_and_check_their_token_ids():
    logits = np.arange(5, dtype=np.float32)[None]
    penalties.process_logits(logits, np.array([[1, 1, 2]], np.int32), {}, eos_token_ids=[], prompt_length=1)
    np.testing.assert_array_equal(logits, [[0, 1, 2, 3, 4]])
    with pytest.raises(ValueError, match="logit_bias token id 5"):
        penalties.apply_logit_bias(logits, {5: 1.0})


# ----------------------------------------------------------------------------------------------------------------
# The engine and libstdc++'s distributions, without the peer


class CountingRng:
    def __init__(self, rng):
        self.rng, self.draws = rng, 0

    def next_u32(self):
        self.draws += 1
        return self.rng.next_u32()


class FixedRng:
    def __init__(self, words):
        self.words = list(words)

    def next_u32(self):
        return self.words.pop(0)


def test_mt19937_is_std_mt19937():
    rng = sampling.Mt19937(5489)  # std::mt19937's default seed
    first = [rng.next_u32() for _ in range(10000)]
    assert first[:2] == [3499211612, 581869302]
    assert first[-1] == 4123659995  # the C++ standard's required 10000th output


def test_generate_canonical_takes_two_words_low_first_and_stays_below_one():
    assert sampling.generate_canonical(FixedRng([0, 1])) == 2.0**-32
    assert sampling.generate_canonical(FixedRng([1, 0])) == 2.0**-64
    largest = FixedRng([0xFFFFFFFF, 0xFFFFFFFF])  # (2**64 - 1) / 2**64 rounds to 1.0 in double
    assert sampling.generate_canonical(largest) == np.nextafter(1.0, 0.0)


def test_discrete_distribution_lower_bound_and_single_weight():
    assert sampling.discrete_distribution(np.array([1.0], np.float32), FixedRng([])) == 0  # nothing drawn
    assert sampling.discrete_distribution(np.array([0.0, 1.0], np.float32), FixedRng([0, 0])) == 0  # 0 <= cp[0] = 0
    halves = np.array([1.0, 1.0], np.float32)  # cumulative [0.5, 1.0]
    assert sampling.discrete_distribution(halves, FixedRng([0, 0x80000000])) == 0  # a draw of exactly 0.5
    assert sampling.discrete_distribution(halves, FixedRng([0x800, 0x80000000])) == 1  # 0.5 + 2**-53


def test_expf_is_the_c_librarys():
    # arguments where glibc's expf differs from exp in double rounded to float
    hard = np.array([float.fromhex(h) for h in ["-0x1.9424fcp-14", "-0x1.c12628p-14", "-0x1.f5a7aep-14"]], np.float32)
    ours = cpp_arithmetic.expf(hard)
    assert [cpp_arithmetic._libm.expf(float(x)) for x in hard] == ours.tolist()
    assert (np.exp(hard.astype(np.float64)).astype(np.float32) != ours).all()
