"""gentwin.chat: chat(), chat_stream(), generate() and conversations, each against its documented behaviour.

Token streams are compared with a Generator driven by hand through the generate() API with the search
options the Cohere options stand for (written out here, not taken from gentwin.chat); cut texts with what
Cohere's documentation says of stop and end sequences, applied to the uncut text.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import stat
import warnings

import numpy as np
import pytest

from gentwin.chat import (COMPLETE, MAX_TOKENS, STOP_SEQUENCE, Client, PresetError, PresetStore,
                          PromptTooLongError)
from gentwin.chat.presets import default_path
from gentwin.chat.stops import StopMatcher
from gentwin.errors import GentwinError
from tests.conftest import ENGINE_IDS, FIXTURE_MODELS, MODEL_DIRS, MODEL_IDS, load

CHAT_MODEL = FIXTURE_MODELS / "llama-fp32"  # byte-level BPE with a chat template; context 256, EOS 1
EOS = 1
SYSTEM = "You are a terse assistant. Answer in one line, and never mention the weather or the sea."
SAMPLED = {"temperature": 0.7, "k": 20, "p": 0.9, "seed": 7}
SAMPLED_SEARCH = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "random_seed": 7}
GREEDY = {"temperature": 0}
GREEDY_SEARCH = {"do_sample": False}


@pytest.fixture(scope="module", params=ENGINE_IDS)
def client(request, tmp_path_factory):
    return Client(CHAT_MODEL, request.param, presets=tmp_path_factory.mktemp("presets") / "presets.json")


def fresh(client, **kwargs) -> Client:
    """A Client on the same engine with an empty prefix cache."""
    return Client(CHAT_MODEL, client.engine.__name__.split(".")[-1], presets=client.presets, **kwargs)


def messages(user: str, system: str | None = SYSTEM) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def template_tokens(client, chat: list[dict]) -> np.ndarray:
    tokenizer = client.tokenizer
    return tokenizer.encode(tokenizer.apply_chat_template(json.dumps(chat), add_generation_prompt=True))


def hand_driven(client, prompt: np.ndarray, search: dict, max_tokens: int) -> tuple[list[int], list[str]]:
    """Tokens and stream pieces of a Generator driven by hand, as the onnxruntime-genai docs show."""
    og, model = client.engine, client.model
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=model.config.context_length, **search)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    stream = client.tokenizer.create_stream()
    tokens, pieces = [], []
    while not generator.is_done() and len(tokens) < max_tokens:
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
        pieces.append(stream.decode(tokens[-1]))
    return tokens, pieces


def deltas(events) -> list[str]:
    return [event["delta"]["message"]["content"]["text"] for event in events if event["type"] == "content-delta"]


def stream_text(events) -> str:
    return "".join(deltas(events))


def spy_appends(monkeypatch, client) -> list[int]:
    """Record how many tokens each append_tokens call of CLIENT's engine runs."""
    appended = []
    original = client.engine.Generator.append_tokens

    def append_tokens(generator, tokens):
        appended.append(int(np.asarray(tokens).size))
        return original(generator, tokens)

    monkeypatch.setattr(client.engine.Generator, "append_tokens", append_tokens)
    return appended


# -- the engine extension the prefix cache stands on: Generator.snapshot / restore ----------------------------

def _greedy_generator(og, model, max_length: int):
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max_length)
    return og.Generator(model, params)


def _next_tokens(generator, count: int) -> list[int]:
    tokens = []
    for _ in range(count):
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


@pytest.mark.parametrize("engine", ENGINE_IDS)
@pytest.mark.parametrize("path", MODEL_DIRS, ids=MODEL_IDS)
def test_a_restored_snapshot_continues_as_the_generator_it_was_taken_from(engine, path):
    og, model = importlib.import_module(f"gentwin.{engine}"), load(f"gentwin.{engine}", str(path))
    prompt = np.array([5, 17, 42, 9, 33, 7, 21], dtype=np.int32)
    generator = _greedy_generator(og, model, 40)
    generator.append_tokens(prompt)
    head = _next_tokens(generator, 4)
    snapshot = generator.snapshot()
    tail = _next_tokens(generator, 8)  # the original goes on, writing its own KV cache
    for max_length in (24, 64):        # twice: restoring and generating leaves the snapshot as it was
        restored = _greedy_generator(og, model, max_length)
        restored.restore(snapshot)
        assert list(restored.get_sequence(0)) == list(prompt) + head
        assert _next_tokens(restored, 8) == tail
    rewound = _greedy_generator(og, model, 40)
    rewound.restore(snapshot)
    rewound.rewind_to(5)
    rewound.append_tokens(prompt[5:])
    assert _next_tokens(rewound, 12) == head + tail


def test_snapshot_and_restore_refuse_what_they_cannot_do():
    og, model = importlib.import_module("gentwin.reference"), load("gentwin.reference", str(CHAT_MODEL))
    generator = _greedy_generator(og, model, 40)
    generator.append_tokens(np.arange(3, 30, dtype=np.int32))
    snapshot = generator.snapshot()
    with pytest.raises(GentwinError, match="more than this generator's max_length"):
        _greedy_generator(og, model, 20).restore(snapshot)
    with pytest.raises(GentwinError, match="another Model"):
        _greedy_generator(og, og.Model(str(CHAT_MODEL)), 40).restore(snapshot)
    with pytest.raises(TypeError, match="GeneratorSnapshot"):
        _greedy_generator(og, model, 40).restore({"tokens": []})
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=40, batch_size=2)
    with pytest.raises(GentwinError, match="batch_size 1"):
        og.Generator(model, params).snapshot()


# -- replies equal a hand-driven Generator -------------------------------------------------------------------

@pytest.mark.parametrize("options, search", [(GREEDY, GREEDY_SEARCH), (SAMPLED, SAMPLED_SEARCH),
                                             ({**SAMPLED, "presence_penalty": 0.8, "frequency_penalty": 0.4},
                                              {**SAMPLED_SEARCH, "presence_penalty": 0.8, "frequency_penalty": 0.4})],
                         ids=["greedy", "sampled", "penalties"])
def test_chat_equals_a_hand_driven_generator(client, options, search):
    chat = messages("What is gentwin?")
    response = client.chat(chat, max_tokens=24, **options)
    tokens, pieces = hand_driven(client, template_tokens(client, chat), search, 24)
    assert list(response.generations[0].token_ids) == tokens
    assert response.text == "".join(pieces)
    assert response.finish_reason == (COMPLETE if tokens[-1] == EOS else MAX_TOKENS)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (len(template_tokens(client, chat)), 24)


def test_chat_equals_onnxruntime_genai_on_the_same_conversation(client):
    """The peer, driven by hand on the prompt its own tokenizer renders, for a conversation's second turn
    (which gentwin.chat continues from the first turn's cached state)."""
    import onnxruntime_genai as og

    first = messages("What is gentwin?")
    reply = client.chat(first, max_tokens=10, **SAMPLED).text
    second = first + [{"role": "assistant", "content": reply}, {"role": "user", "content": "Why two engines?"}]
    model = load("onnxruntime_genai", str(CHAT_MODEL))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=256, **SAMPLED_SEARCH)
    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode(tokenizer.apply_chat_template(json.dumps(second),
                                                                           add_generation_prompt=True)))
    peer = []
    while not generator.is_done() and len(peer) < 16:
        generator.generate_next_token()
        peer.append(int(generator.get_next_tokens()[0]))
    assert list(client.chat(second, max_tokens=16, **SAMPLED).generations[0].token_ids) == peer


def test_chat_stream_yields_cohere_v2_events_with_one_delta_per_piece(client):
    chat = messages("Stream me something")
    events = list(client.chat_stream(chat, max_tokens=16, **SAMPLED))
    _, pieces = hand_driven(client, template_tokens(client, chat), SAMPLED_SEARCH, 16)
    types = [event["type"] for event in events]
    assert types == ["message-start", "content-start"] + ["content-delta"] * (len(types) - 4) + [
        "content-end", "message-end"]
    assert deltas(events) == [piece for piece in pieces if piece]
    assert events[0]["delta"]["message"]["role"] == "assistant" and events[0]["id"]
    end = events[-1]["delta"]
    assert end["finish_reason"] == MAX_TOKENS
    assert end["usage"]["billed_units"] == {"input_tokens": len(template_tokens(client, chat)), "output_tokens": 16}
    assert stream_text(events) == client.chat(chat, max_tokens=16, **SAMPLED).text


def test_a_conversation_turn_continues_as_a_fresh_prefill_of_the_whole_conversation(client):
    first = messages("Tell me a story")
    reply = client.chat(first, max_tokens=12, **GREEDY).text
    second = first + [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
    tokens, _ = hand_driven(client, template_tokens(client, second), SAMPLED_SEARCH, 12)
    assert list(client.chat(second, max_tokens=12, **SAMPLED).generations[0].token_ids) == tokens


# -- the prefix cache --------------------------------------------------------------------------------------

def test_streams_are_identical_with_and_without_the_prefix_cache(client):
    cached, uncached = fresh(client), fresh(client, cache_entries=0)
    runs = []
    for chat_client in (cached, uncached):
        turns, replies = messages("First question"), []
        for question in ("Second question", "Third one"):
            response = chat_client.chat(turns, max_tokens=10, **SAMPLED)
            replies.append(response.generations[0].token_ids)
            turns = turns + [{"role": "assistant", "content": response.text}, {"role": "user", "content": question}]
        replies.append(deltas(chat_client.chat_stream(messages("Another chat"), max_tokens=10, **SAMPLED)))
        runs.append(replies)
    assert runs[0] == runs[1]
    assert len(cached.prefix_cache) > 0 and len(uncached.prefix_cache) == 0


def test_chats_sharing_a_system_prompt_prefill_it_once(client, monkeypatch):
    system = " ".join(["Follow every rule written here with care."] * 12)
    chats = [messages(question, system) for question in ("One?", "Two?", "Three?")]
    cached = fresh(client)
    appended = spy_appends(monkeypatch, cached)
    usages = [cached.chat(chat, max_tokens=2, **GREEDY).usage for chat in chats]
    system_tokens = cached.tokenizer.encode(cached.tokenizer.apply_chat_template(
        json.dumps(chats[0][:1]), add_generation_prompt=False))
    prompts = [template_tokens(cached, chat) for chat in chats]
    assert len(system_tokens) > 100
    assert appended[:2] == [len(system_tokens), len(prompts[0]) - len(system_tokens)]  # the first chat snapshots it
    assert all(count < len(prompt) - len(system_tokens) for count, prompt in zip(appended[2:], prompts[1:]))
    assert [usage.cached_tokens for usage in usages] == [0] + [len(prompt) - count for count, prompt in
                                                               zip(appended[2:], prompts[1:])]


def test_a_grown_conversation_appends_only_the_new_turn(client, monkeypatch):
    cached = fresh(client)
    first = messages("Hello")
    reply = cached.chat(first, max_tokens=8, **GREEDY)
    second = first + [{"role": "assistant", "content": reply.text}, {"role": "user", "content": "More"}]
    appended = spy_appends(monkeypatch, cached)
    cached.chat(second, max_tokens=8, **GREEDY)
    held = np.concatenate([template_tokens(cached, first), reply.generations[0].token_ids])
    prompt = template_tokens(cached, second)
    shared = next(i for i, (a, b) in enumerate(zip(held, prompt)) if a != b)
    assert shared >= len(template_tokens(cached, first))
    assert appended == [len(prompt) - shared]


def test_the_prefix_cache_is_bounded(client):
    bounded = fresh(client, cache_entries=2, cache_tokens=10_000)
    for question in ("a", "b", "c", "d"):
        bounded.chat(messages(question, None), max_tokens=3, **GREEDY)
    assert len(bounded.prefix_cache) == 2
    by_tokens = fresh(client, cache_entries=100, cache_tokens=60)
    for question in ("a", "b", "c", "d"):
        by_tokens.chat(messages(question, None), max_tokens=3, **GREEDY)
    assert 0 < by_tokens.prefix_cache.tokens <= 60


# -- finish reasons, stop and end sequences ---------------------------------------------------------------

def test_eos_ends_the_reply_complete(client):
    response = client.chat(messages("Say nothing"), max_tokens=10, logit_bias={EOS: 100.0}, **GREEDY)
    assert (response.text, response.finish_reason, response.generations[0].token_ids) == ("", COMPLETE, (EOS,))


def _uncut_and_a_sequence_across_tokens(client, chat, **options):
    """The greedy reply, and a string spanning a boundary between two of its tokens, first found there."""
    tokens, pieces = hand_driven(client, template_tokens(client, chat), GREEDY_SEARCH, 40)
    text = "".join(pieces)
    for index in range(1, len(pieces) - 1):
        before, after = pieces[index], pieces[index + 1]
        if len(before) >= 2 and len(after) >= 2 and "\ufffd" not in before + after:
            sequence = before[-2:] + after[:2]
            if text.find(sequence) == len("".join(pieces[:index + 1])) - 2:
                return text, sequence
    pytest.fail(f"no two neighbouring pieces of text in {pieces!r}")


def test_chat_stop_sequence_split_across_tokens_is_held_back_and_left_out(client):
    chat = messages("Write a line")
    text, sequence = _uncut_and_a_sequence_across_tokens(client, chat)
    expected = text[: text.find(sequence)]  # Chat: "up to that point not including the stop sequence"
    response = client.chat(chat, max_tokens=40, stop_sequences=[sequence], **GREEDY)
    assert (response.text, response.finish_reason) == (expected, STOP_SEQUENCE)
    events = list(client.chat_stream(chat, max_tokens=40, stop_sequences=[sequence], **GREEDY))
    assert stream_text(events) == expected  # nothing of the sequence was streamed, even its first half
    assert events[-1]["delta"]["finish_reason"] == STOP_SEQUENCE


def test_generate_keeps_stop_sequences_and_drops_end_sequences(client):
    prompt = "Continue this"
    chat = [{"role": "user", "content": prompt}]
    text, sequence = _uncut_and_a_sequence_across_tokens(client, chat)
    with pytest.warns(DeprecationWarning):
        stopped = client.generate(prompt, max_tokens=40, stop_sequences=[sequence], **GREEDY)
        ended = client.generate(prompt, max_tokens=40, end_sequences=[sequence], **GREEDY)
    # Generate: stop sequences are "included the text", end sequences "excluded from the text".
    assert (stopped.text, stopped.finish_reason) == (text[: text.find(sequence) + len(sequence)], STOP_SEQUENCE)
    assert (ended.text, ended.finish_reason) == (text[: text.find(sequence)], STOP_SEQUENCE)


def test_max_tokens_ends_the_reply(client):
    response = client.chat(messages("Go on"), max_tokens=3, **GREEDY)
    assert (len(response.generations[0].token_ids), response.finish_reason) == (3, MAX_TOKENS)


@pytest.mark.parametrize("pieces, excluded, included, shown, stopped", [
    (["ab", "cX", "Yd"], ("XY",), (), "abc", True),        # split across three pieces: "X" held back
    (["ab", "X", "Z"], ("XY",), (), "abXZ", False),        # the held "X" is released once "Z" disproves it
    (["abcd"], ("abcd", "bc"), (), "a", True),             # "bc" completes first
    (["abc"], ("bc",), ("c",), "a", True),                 # same last character: the one starting first
    (["ab", "c"], (), ("bc",), "abc", True),               # included: kept, and nothing held back
    (["xab", "c!"], ("abc",), (), "x", True),
    (["a", "b"], ("bz",), (), "ab", False),                # "b" held back, then released by flush
])
def test_stop_matcher_cuts_where_cohere_says_and_shows_nothing_that_gets_cut(pieces, excluded, included, shown,
                                                                              stopped):
    matcher = StopMatcher(excluded, included)
    released, ended = [], False
    for piece in pieces:
        text, ended = matcher.feed(piece)
        released.append(text)
        if ended:
            break
    if not ended:
        released.append(matcher.flush())
    assert ("".join(released), ended) == (shown, stopped)


# -- what Chat dropped: num_generations, truncate, logit_bias, penalties, presets ------------------------

def test_num_generations_share_one_prefill_and_seed_each_generation(client, monkeypatch):
    chat = messages("Give me options")
    uncached = fresh(client, cache_entries=0)
    appended = spy_appends(monkeypatch, uncached)
    response = uncached.chat(chat, max_tokens=8, num_generations=3, **SAMPLED)
    assert appended == [len(template_tokens(client, chat))]  # one prefill for the three
    for index, generation in enumerate(response.generations):
        seeded = {**SAMPLED_SEARCH, "random_seed": 7 + index}
        tokens, _ = hand_driven(client, template_tokens(client, chat), seeded, 8)
        assert list(generation.token_ids) == tokens
    assert response.usage.input_tokens == len(template_tokens(client, chat))
    assert response.usage.output_tokens == sum(len(g.token_ids) for g in response.generations)
    assert len({g.token_ids for g in response.generations}) == 3


@pytest.mark.parametrize("mode", ["START", "END"])
def test_truncate_keeps_the_start_or_the_end_of_a_prompt_longer_than_the_context(client, mode):
    chat = messages("many words " * 150, None)
    prompt = template_tokens(client, chat)
    limit = client.model.config.context_length - 1  # room for one generated token
    assert len(prompt) > limit
    kept = prompt[len(prompt) - limit:] if mode == "START" else prompt[:limit]  # "input is discarded until ..."
    response = client.chat(chat, truncate=mode, max_tokens=5, **GREEDY)
    tokens, _ = hand_driven(client, kept, GREEDY_SEARCH, 5)
    assert list(response.generations[0].token_ids) == tokens
    assert (response.usage.input_tokens, response.finish_reason) == (limit, MAX_TOKENS)  # then the context is full


def test_truncate_none_refuses_a_prompt_longer_than_the_context(client):
    with pytest.raises(PromptTooLongError, match="truncate"):
        client.chat(messages("many words " * 150, None), **GREEDY)
    with pytest.warns(DeprecationWarning), pytest.raises(PromptTooLongError):
        client.generate("many words " * 150, truncate="NONE")


def test_logit_bias_adds_to_the_logits(client):
    forced = client.chat(messages("Anything"), max_tokens=6, logit_bias={"300": 100.0}, **GREEDY)
    assert forced.generations[0].token_ids == (300,) * 6
    plain = client.chat(messages("Anything"), max_tokens=1, **GREEDY).generations[0].token_ids[0]
    banned = client.chat(messages("Anything"), max_tokens=6, logit_bias={plain: -100.0}, **GREEDY)
    assert plain not in banned.generations[0].token_ids


def test_presence_penalty_keeps_greedy_replies_from_repeating_a_token(client):
    plain = client.chat(messages("Repeat yourself"), max_tokens=60, **GREEDY).generations[0].token_ids
    assert len(set(plain)) < len(plain)  # greedy on this model repeats itself, so the penalty has work to do
    penalized = client.chat(messages("Repeat yourself"), max_tokens=60, presence_penalty=1000.0, **GREEDY)
    assert len(set(penalized.generations[0].token_ids)) == 60
    frequency = client.chat(messages("Repeat yourself"), max_tokens=60, frequency_penalty=1000.0, **GREEDY)
    assert len(set(frequency.generations[0].token_ids)) == 60


def test_presets_are_named_options_in_a_file_the_user_owns(client, tmp_path):
    store = PresetStore(tmp_path / "presets.json")
    store.save("short", max_tokens=4, temperature=0, stop_sequences=["zz"])
    store.save("prompted", prompt="Continue this", max_tokens=3, temperature=0)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert json.loads(store.path.read_text())["short"] == {"max_tokens": 4, "temperature": 0, "stop_sequences": ["zz"]}
    with_presets = fresh(client)
    with_presets.presets = store
    chat = messages("Preset please")
    assert with_presets.chat(chat, preset="short").generations == client.chat(
        chat, max_tokens=4, stop_sequences=["zz"], **GREEDY).generations
    assert len(with_presets.chat(chat, preset="short", max_tokens=2).generations[0].token_ids) == 2  # call wins
    with pytest.warns(DeprecationWarning):
        assert with_presets.generate(preset="prompted").text == client.generate("Continue this", max_tokens=3,
                                                                                **GREEDY).text
    with pytest.raises(ValueError, match="only generate"):
        with_presets.chat(chat, preset="prompted")
    with pytest.raises(PresetError, match="no preset named 'nope'.*prompted, short"):
        with_presets.chat(chat, preset="nope")
    with pytest.raises(PresetError, match="preset 'bad': temperature"):
        store.save("bad", temperature=-1)
    store.delete("short")
    assert store.names() == ["prompted"]


def test_presets_live_in_the_users_config_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_path() == tmp_path / "gentwin" / "presets.json"
    assert PresetStore().path == default_path()
    (tmp_path / "gentwin").mkdir()
    (tmp_path / "gentwin" / "presets.json").write_text("[1, 2]")
    with pytest.raises(PresetError, match="must hold a JSON object"):
        PresetStore().names()


# -- the migration from generate() ------------------------------------------------------------------------

def test_generate_warns_with_the_equivalent_chat_call_which_gives_the_same_reply(client):
    with pytest.warns(DeprecationWarning, match=r"client\.chat\(messages=") as caught:
        old = client.generate("Hello there", max_tokens=6, seed=3)
    call = str(caught[0].message).split("the same with chat(): ")[1]
    new = eval(call, {"client": client})  # the call the warning shows, run as written
    assert new.generations == old.generations
    assert "temperature=0.75" in call and "truncate='END'" in call  # Generate's defaults, spelled out


def test_generate_with_raw_prompting_encodes_the_prompt_as_it_is(client):
    with pytest.warns(DeprecationWarning, match="raw_prompting"):
        response = client.generate("The reference is the oracle", raw_prompting=True, max_tokens=8, **GREEDY)
    tokens, _ = hand_driven(client, client.tokenizer.encode("The reference is the oracle"), GREEDY_SEARCH, 8)
    assert list(response.generations[0].token_ids) == tokens


# -- conversations: the 0.6.0 chat mode, undo = rewind ---------------------------------------------------

def test_a_conversation_appends_each_turn_to_one_generator_and_undo_rewinds_it(client, monkeypatch):
    stateless = fresh(client).chat(messages("Hello"), max_tokens=8, **GREEDY).text
    conversation = client.conversation(SYSTEM, max_tokens=8, **GREEDY)  # appends the system prompt
    appended = spy_appends(monkeypatch, client)
    first = "".join(conversation.say("Hello"))
    second = "".join(conversation.say("More"))
    conversation.undo()
    assert "".join(conversation.say("More")) == second
    conversation.reset()
    assert conversation.messages == [{"role": "system", "content": SYSTEM}]
    assert "".join(conversation.say("Hello")) == first == stateless
    system, hello = messages("Hello")
    system_tokens = client.tokenizer.encode(client.tokenizer.apply_chat_template(
        json.dumps([system]), add_generation_prompt=False))
    prompts = [template_tokens(client, [system, hello]),
               template_tokens(client, [system, hello, {"role": "assistant", "content": first},
                                        {"role": "user", "content": "More"}])]
    assert appended[0] == appended[3] == len(prompts[0]) - len(system_tokens)  # only the turn, after a reset too
    assert appended[1] == appended[2] <= len(prompts[1]) - len(prompts[0])  # after an undo, the same rewind
    with pytest.raises(GentwinError, match="nothing to undo"):
        client.conversation(None).undo()


# -- bad input is refused before anything runs --------------------------------------------------------------

@pytest.mark.parametrize("chat, options, error, match", [
    ("hello", {}, TypeError, "list of"),
    ([], {}, ValueError, "empty"),
    ([{"role": "tool", "content": "x"}], {}, ValueError, "role"),
    ([{"role": "user"}], {}, ValueError, "content"),
    ([{"role": "user", "content": "x", "tool_calls": []}], {}, ValueError, "tool_calls"),
    ([{"role": "user", "content": [{"type": "image"}]}], {}, ValueError, "text"),
    (None, {"temprature": 1}, TypeError, "unknown option 'temprature'"),
    (None, {"temperature": -1}, ValueError, "temperature"),
    (None, {"p": 0}, ValueError, "p must be"),
    (None, {"k": -1}, ValueError, "k must be"),
    (None, {"k": 2000}, ValueError, "top_k"),
    (None, {"seed": -5}, ValueError, "seed"),
    (None, {"max_tokens": 0}, ValueError, "max_tokens"),
    (None, {"num_generations": 6}, ValueError, "num_generations"),
    (None, {"truncate": "MIDDLE"}, ValueError, "truncate"),
    (None, {"stop_sequences": "stop"}, TypeError, "list of strings"),
    (None, {"stop_sequences": [""]}, ValueError, "non-empty"),
    (None, {"logit_bias": {5000: 1.0}}, ValueError, "outside the vocabulary"),
    (None, {"logit_bias": {"x": 1.0}}, ValueError, "not a token id"),
    (None, {"temperature": True}, TypeError, "temperature"),
    (None, {"temperature": 5.01}, ValueError, r"temperature must be in \[0.0, 5.0\]"),
    (None, {"temperature": float("inf")}, ValueError, "temperature must be in"),
    (None, {"presence_penalty": 1e308}, ValueError, r"presence_penalty must be in \[0.0, 1000.0\]"),
    (None, {"frequency_penalty": float("nan")}, ValueError, "frequency_penalty must be in"),
    (None, {"logit_bias": {5: -1000.5}}, ValueError, r"logit_bias\[5\] must be in"),
    (None, {"max_tokens": 256}, ValueError, "max_tokens must be at most 255, got 256: the model's context holds 256"),
    (None, {"stop_sequences": ["a", "b", "c", "d", "e", "f"]}, ValueError, "at most 5"),
    (None, {"end_sequences": ["ok", "y" * 513]}, ValueError, r"end_sequences\[1\] is 513 characters"),
])
def test_bad_input_raises_naming_the_problem_before_any_event(client, chat, options, error, match):
    chat = messages("hi") if chat is None else chat
    with pytest.raises(error, match=match):
        client.chat(chat, **options)
    with pytest.raises(error, match=match):
        client.chat_stream(chat, **options)  # raised by the call itself, not by the first event


def test_the_bounds_themselves_are_accepted(client):
    response = client.chat(messages("hi"), max_tokens=255, temperature=5.0, presence_penalty=1000.0,
                           frequency_penalty=1000.0, logit_bias={5: -1000.0}, stop_sequences=["z" * 512] * 5, seed=1)
    assert response.finish_reason in (COMPLETE, MAX_TOKENS)


def test_chat_stream_streams_one_generation(client):
    with pytest.raises(ValueError, match="num_generations"):
        client.chat_stream(messages("hi"), num_generations=2)


def test_closing_a_stream_early_frees_its_generator(client):
    cached = fresh(client)
    events = cached.chat_stream(messages("Abandon me"), max_tokens=100, **GREEDY)
    assert next(events)["type"] == "message-start" and cached.active_generators == 0  # nothing runs yet
    next(events), next(events)
    assert cached.active_generators == 1
    events.close()
    assert cached.active_generators == 0
    prompt = template_tokens(cached, messages("Abandon me"))
    assert cached.prefix_cache.lookup(np.concatenate([prompt, [5] * 50]))[0] <= len(prompt)  # no end state kept


def test_unknown_engine_is_refused():
    with pytest.raises(GentwinError, match="unknown engine 'turbo'; the engines are fast, reference"):
        Client(CHAT_MODEL, "turbo")


def test_generate_needs_a_prompt(client):
    with warnings.catch_warnings(), pytest.raises(ValueError, match="non-empty prompt"):
        warnings.simplefilter("ignore", DeprecationWarning)
        client.generate()


def test_gentwin_chat_streams_replies_in_the_terminal_and_undo_rewinds(monkeypatch, capsys):
    from gentwin.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n/undo\n/undo\nHello\n/reset\nHello\n/help\n"))
    assert main(["chat", str(CHAT_MODEL), "--engine", "reference", "--system", SYSTEM, "--max-tokens", "8",
                 "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    expected = Client(CHAT_MODEL, "reference", cache_entries=0).chat(messages("Hello"), max_tokens=8, **GREEDY)
    assert out.count(f"> {expected.text}\n({expected.finish_reason})\n") == 3
    assert "(last turn forgotten)" in out and "(conversation reset)" in out and "/reset   forget" in out
    assert err == "error: nothing to undo: the conversation has no turn yet\n"  # the second /undo, on stderr
