"""The Engine (continuous batching) on both engines, against onnxruntime-genai's Engine and Generator live.

Every request's stream must be the stream of a Generator given the request's history alone, and the peer's
Engine's stream; whatever the other requests do (admitted together, later, finishing first, cancelled).
"""

from __future__ import annotations

import numpy as np
import onnxruntime_genai as peer
import pytest

from tests.conftest import ENGINE_IDS, ENGINES, FIXTURE_MODELS, load

LLAMA = str(FIXTURE_MODELS / "llama-fp32")
PROMPT_A, PROMPT_B, PROMPT_C = [5, 9, 13], [7, 2, 20, 4], [3, 8, 2, 15, 6, 11]
BOTH = pytest.mark.parametrize("og", [*ENGINES, peer], ids=[*ENGINE_IDS, "peer"])
OURS = pytest.mark.parametrize("og", ENGINES, ids=ENGINE_IDS)


def begin(og, request, prompt, max_new=None, **options) -> int:
    turn_options = og.TurnOptions(request)
    if max_new is not None:
        turn_options.set_max_generated_tokens(max_new)
    for name, value in options.items():
        getattr(turn_options, f"set_{name}")(value)
    return request.begin_turn(np.array(prompt, dtype=np.int32), turn_options)


def run_to_end(engine, capacity: int = 8, steps: int | None = None) -> list[list[tuple]]:
    """Each run's events as (request, turn id, token, flags, finish reason) tuples, until nothing is pending."""
    buffer = engine.create_event_buffer(capacity)
    runs = []
    while engine.has_pending_requests() and (steps is None or len(runs) < steps):
        engine.run(buffer)
        runs.append([(event.request, event.turn_id, event.token, int(event.flags), int(event.finish_reason))
                     for event in buffer])
        assert len(runs) < 1000, "the engine never finished"
    return runs


def stream(runs, request) -> list[int]:
    return [token for run in runs for (owner, _, token, _, _) in run if owner is request and token is not None]


def alone(og, folder, history, max_new) -> list[int]:
    """The tokens a Generator given HISTORY alone generates, greedily, at most MAX_NEW of them."""
    model = load(og.__name__, folder)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(history) + max_new, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(history, dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    return [int(token) for token in generator.get_sequence(0)[len(history):]]


def comparable(runs, names):
    """RUNS with each request replaced by its name, so two engines' runs compare."""
    return [[(names[id(owner)], *rest) for (owner, *rest) in run] for run in runs]


@BOTH
def test_requests_admitted_together_stream_as_alone_and_as_the_peers_engine(og):
    engine = og.Engine(load(og.__name__, LLAMA))
    a, b = engine.create_request(), engine.create_request()
    assert begin(og, a, PROMPT_A, 6) == 1 and begin(og, b, PROMPT_B, 4) == 1
    runs = run_to_end(engine)
    assert stream(runs, a) == alone(peer, LLAMA, PROMPT_A, 6)
    assert stream(runs, b) == alone(peer, LLAMA, PROMPT_B, 4)
    assert [len(run) for run in runs] == [2, 2, 2, 2, 1, 1]  # one token each per run, b finished after 4
    finished = [event for run in runs for event in run if event[3] & int(og.EngineEventFlags.TURN_FINISHED)]
    assert [(event[0], event[4]) for event in finished] == [(b, int(og.FinishReason.MAX_GENERATED_TOKENS)),
                                                            (a, int(og.FinishReason.MAX_GENERATED_TOKENS))]


@OURS
def test_runs_are_the_peers_event_for_event_with_a_small_buffer(og):
    def events(module):
        engine = module.Engine(load(module.__name__, LLAMA))
        a, b = engine.create_request(), engine.create_request()
        begin(module, a, PROMPT_A, 3)
        begin(module, b, PROMPT_C, 5)
        return comparable(run_to_end(engine, capacity=1), {id(a): "a", id(b): "b"})
    assert events(og) == events(peer)


@BOTH
def test_staggered_admission_and_a_sibling_finishing_first_change_no_stream(og):
    engine = og.Engine(load(og.__name__, LLAMA))
    a = engine.create_request()
    begin(og, a, PROMPT_A, 12)
    early = run_to_end(engine, steps=3)
    b, c = engine.create_request(), engine.create_request()
    begin(og, b, PROMPT_B, 2)
    begin(og, c, PROMPT_C, 10)
    runs = early + run_to_end(engine)
    assert stream(runs, a) == alone(peer, LLAMA, PROMPT_A, 12)
    assert stream(runs, b) == alone(peer, LLAMA, PROMPT_B, 2)
    assert stream(runs, c) == alone(peer, LLAMA, PROMPT_C, 10)


@OURS
def test_more_requests_than_slots_wait_their_turn(og):
    engine = og.Engine(load(og.__name__, LLAMA))
    slots = engine.get_capabilities().configured_max_batch_size
    assert slots == peer.Engine(load(peer.__name__, LLAMA)).get_capabilities().configured_max_batch_size
    requests = [engine.create_request() for _ in range(slots + 2)]
    prompts = [[5 + index, 9, 13] for index in range(len(requests))]
    for request, prompt in zip(requests, prompts):
        begin(og, request, prompt, 3)
    runs = run_to_end(engine)
    assert len(runs[0]) == slots
    for request, prompt in zip(requests, prompts):
        assert stream(runs, request) == alone(peer, LLAMA, prompt, 3)


@BOTH
def test_a_second_turn_continues_the_whole_history(og):
    engine = og.Engine(load(og.__name__, LLAMA))
    request = engine.create_request()
    begin(og, request, PROMPT_A, 4)
    first = stream(run_to_end(engine), request)
    assert begin(og, request, [1, 12], 5) == 2  # EOS in a prompt is context, not a stop
    buffer = engine.create_event_buffer(8)
    events = []  # read at once: the peer's events are views of its buffer, which the next run overwrites
    while engine.has_pending_requests():
        events += [(event.turn_id, event.token, event.usage.prompt_tokens, event.usage.generated_tokens)
                   for event in engine.run(buffer)]
    assert [token for _, token, _, _ in events] == alone(peer, LLAMA, PROMPT_A + first + [1, 12], 5)
    assert {turn_id for turn_id, _, _, _ in events} == {2}
    assert events[-1][2:] == (2, 5)


@BOTH
def test_the_session_limit_stops_a_turn_without_a_cap(og):
    engine = og.Engine(load(og.__name__, LLAMA))
    options = og.RequestOptions()
    options.set_max_session_tokens(9)
    request = engine.create_request(options=options)
    begin(og, request, PROMPT_A)
    runs = run_to_end(engine)
    assert stream(runs, request) == alone(peer, LLAMA, PROMPT_A, 6)
    assert runs[-1][0][4] == int(og.FinishReason.MAX_SESSION_TOKENS)


@BOTH
def test_a_cancelled_turn_ends_with_a_tokenless_event_and_the_sibling_runs_on(og):
    engine = og.Engine(load(og.__name__, LLAMA))
    a, b = engine.create_request(), engine.create_request()
    begin(og, a, PROMPT_A, 50)
    begin(og, b, PROMPT_B, 6)
    runs = run_to_end(engine, steps=2)
    assert a.cancel_turn(1) and not a.cancel_turn(1) and not a.cancel_turn(7)
    runs += run_to_end(engine)
    last_of_a = [event for run in runs for event in run if event[0] is a][-1]
    assert last_of_a[2:] == (None, int(og.EngineEventFlags.TURN_FINISHED), int(og.FinishReason.CANCELLED))
    assert len(stream(runs, a)) == 2
    assert stream(runs, b) == alone(peer, LLAMA, PROMPT_B, 6)


@OURS
def test_a_closed_request_stops_at_once_and_takes_no_turn(og):
    engine = og.Engine(load(og.__name__, LLAMA))
    a, b = engine.create_request(), engine.create_request()
    begin(og, a, PROMPT_A, 50)
    begin(og, b, PROMPT_B, 5)
    runs = run_to_end(engine, steps=2)
    a.close()
    runs += run_to_end(engine)
    assert len(stream(runs, a)) == 2
    assert stream(runs, b) == alone(peer, LLAMA, PROMPT_B, 5)
    with pytest.raises(og.GentwinError, match="closed Request"):
        begin(og, a, [12])


@BOTH
def test_eos_ends_a_turn_with_a_tokenless_event_and_stays_out_of_the_history(og):
    engine = og.Engine(load(og.__name__, LLAMA))
    request = engine.create_request()
    begin(og, request, [56], 30)  # greedy, the fixture says EOS after 11 tokens
    runs = run_to_end(engine)
    first = stream(runs, request)
    assert first == alone(peer, LLAMA, [56], 30) and len(first) < 30
    assert runs[-1][0][2:] == (None, int(og.EngineEventFlags.TURN_FINISHED), int(og.FinishReason.EOS))
    begin(og, request, [12], 4)
    assert stream(run_to_end(engine), request) == alone(peer, LLAMA, [56, *first, 12], 4)


@OURS
def test_rewinding_to_a_turn_replays_it(og):
    engine = og.Engine(load(og.__name__, LLAMA))
    request = engine.create_request()
    begin(og, request, PROMPT_A, 3)
    first = stream(run_to_end(engine), request)
    begin(og, request, [12], 3)
    run_to_end(engine)
    request.rewind_to_start_of_turn(2)
    begin(og, request, [40], 3)
    assert stream(run_to_end(engine), request) == alone(peer, LLAMA, PROMPT_A + first + [40], 3)


@OURS
@pytest.mark.parametrize("bad, message", [
    (lambda og, r: begin(og, r, []), "is empty"),
    (lambda og, r: begin(og, r, [1024]), "outside the vocabulary"),
    (lambda og, r: begin(og, r, [-1]), "outside the vocabulary"),
    (lambda og, r: r.begin_turn(np.zeros((2, 2), np.int32)), "one-dimensional"),
    (lambda og, r: begin(og, r, [5], do_sample=True, top_p=2.0), "top_p"),
    (lambda og, r: begin(og, r, [5], max_generated_tokens=-1), "max_generated_tokens"),
    (lambda og, r: begin(og, r, [5] * 300), "max_session_tokens"),
    (lambda og, r: r.begin_turn(np.array([5.0])), "integers"),
    (lambda og, r: begin(og, r, [5], stop_strings=["x"]), "stop strings"),
    (lambda og, r: r.engine.create_event_buffer(0), "capacity"),
    (lambda og, r: r.set_draft_tokens([5]), "drafts"),
], ids=["empty", "past-vocab", "negative", "2-d", "top-p", "negative-cap", "past-session", "floats", "stop-strings",
        "empty-buffer", "drafts"])
def test_bad_input_is_refused_before_any_state_changes(og, bad, message):
    engine = og.Engine(load(og.__name__, LLAMA))
    request = engine.create_request()
    with pytest.raises(og.GentwinError, match=message):
        bad(og, request)
    assert not engine.has_pending_requests()
    begin(og, request, PROMPT_A, 3)
    assert stream(run_to_end(engine), request) == alone(peer, LLAMA, PROMPT_A, 3)


@OURS
def test_a_running_turn_refuses_another(og):
    engine = og.Engine(load(og.__name__, LLAMA))
    request = engine.create_request()
    begin(og, request, PROMPT_A, 3)
    with pytest.raises(og.GentwinError, match="still running"):
        begin(og, request, [12])
    assert stream(run_to_end(engine), request) == alone(peer, LLAMA, PROMPT_A, 3)


# The peer's Engine runs these with the peer's Generator's streams. Not the others: gpt2 it refuses ("not
# supported for decoding"), and on mistral-mha-fp32's growing (not shared-buffer) cache, from the second token
# on, even a request alone gets another stream than the peer's Generator gives it (prompt [3, 8, 2, 15, 6, 11]:
# 414, 442, ... against 414, 928, ...); there gentwin's engines are held to the peer's Generator alone.
PEER_ENGINE_LAYOUTS = ["gemma-fp32"]
GROWING_CACHE_LAYOUTS = ["mistral-mha-fp32", "gpt2-fp32"]


@pytest.mark.parametrize("og, fixture", [
    *[(og, fixture) for og in (*ENGINES, peer) for fixture in PEER_ENGINE_LAYOUTS],
    *[(og, fixture) for og in ENGINES for fixture in GROWING_CACHE_LAYOUTS],
], ids=lambda value: getattr(value, "__name__", value))
def test_other_layouts_stream_as_alone(og, fixture):
    folder = str(FIXTURE_MODELS / fixture)
    engine = og.Engine(load(og.__name__, folder))
    a, b = engine.create_request(), engine.create_request()
    begin(og, a, PROMPT_C, 5)
    early = run_to_end(engine, steps=2)
    begin(og, b, PROMPT_B, 4)
    runs = early + run_to_end(engine)
    assert stream(runs, a) == alone(peer, folder, PROMPT_C, 5)
    assert stream(runs, b) == alone(peer, folder, PROMPT_B, 4)


@OURS
def test_each_request_samples_with_its_own_options_and_seed_as_the_peers_generator(og):
    def sampled(module, prompt, seed, **options):
        model = load(module.__name__, LLAMA)
        params = module.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt) + 8, do_sample=True, random_seed=seed, **options)
        generator = module.Generator(model, params)
        generator.append_tokens(np.array(prompt, dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
        return [int(token) for token in generator.get_sequence(0)[len(prompt):]]

    engine = og.Engine(load(og.__name__, LLAMA))
    a, b, c = engine.create_request(), engine.create_request(), engine.create_request()
    begin(og, a, PROMPT_A, 8, do_sample=True, seed=7, top_k=5)
    begin(og, b, PROMPT_A, 8, do_sample=True, seed=8, top_p=0.9, temperature=0.7)
    begin(og, c, PROMPT_A, 8)  # greedy beside them
    runs = run_to_end(engine)
    assert stream(runs, a) == sampled(peer, PROMPT_A, 7, top_k=5)
    assert stream(runs, b) == sampled(peer, PROMPT_A, 8, top_p=0.9, temperature=0.7)
    assert stream(runs, c) == alone(peer, LLAMA, PROMPT_A, 8)
    assert stream(runs, a) != stream(runs, b) != stream(runs, c)


@BOTH
@pytest.mark.parametrize("admitted", [True, False], ids=["running", "waiting"])
def test_a_cancelled_turn_keeps_what_it_had_in_the_history(og, admitted):
    engine = og.Engine(load(og.__name__, LLAMA))
    request = engine.create_request()
    begin(og, request, PROMPT_A, 50)
    runs = run_to_end(engine, steps=2) if admitted else []
    assert request.cancel_turn(1)
    runs += run_to_end(engine)
    kept = stream(runs, request)
    assert len(kept) == (2 if admitted else 0)
    begin(og, request, [12], 3)
    assert stream(run_to_end(engine), request) == alone(peer, LLAMA, PROMPT_A + kept + [12], 3)


@OURS
def test_turn_options_of_another_request_are_refused(og):
    engine = og.Engine(load(og.__name__, LLAMA))
    mine, other = engine.create_request(), engine.create_request()
    with pytest.raises(og.GentwinError, match="another Request"):
        mine.begin_turn(np.array(PROMPT_A, dtype=np.int32), og.TurnOptions(other))
    assert not engine.has_pending_requests()
