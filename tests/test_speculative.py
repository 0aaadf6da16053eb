"""Speculative decoding with n-gram drafts, on both engines, against onnxruntime-genai live.

Two kinds of model: the committed fixtures (real KV caches, where drafts are mostly rejected, so every round
rolls the cache back), and a table model written here whose next token depends on the last token alone
(logits = TABLE[token], no cache), where drafts are accepted whole and bonus tokens, chained lookup,
cooldown and the statistics show. Streams with drafts must equal streams without, and the peer's.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime_genai as peer
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import ENGINE_IDS, ENGINES, FIXTURE_MODELS

# The statistics that do not depend on timing (the adaptive width does, so it is compared only when fixed).
COUNTED = ("rounds", "completed_rounds", "interrupted_rounds", "active_rounds", "draft_tokens_proposed",
           "draft_tokens_evaluated", "draft_tokens_accepted", "correction_tokens", "bonus_tokens", "tokens_queued",
           "tokens_emitted", "tokens_discarded", "tokens_buffered", "standard_fallback_steps", "full_accept_rounds",
           "partial_accept_rounds", "zero_accept_rounds", "target_verify_forward_passes", "ngram_lookup_hits",
           "ngram_lookup_misses", "ngram_lookup_tokens_proposed", "ngram_chained_tokens_proposed",
           "ngram_history_syncs", "ngram_history_tokens_synced", "effective_k", "cooldown_entries", "cooldown_steps",
           "cooldown_remaining", "draft_forward_passes", "acceptance_length_histogram")
KV_FIXTURES = ["llama-fp32", "llama-int4", "qwen2-int4", "gemma-fp32", "mistral-mha-fp32"]
FP32_FIXTURES = ["llama-fp32", "gemma-fp32", "mistral-mha-fp32"]  # the peer's int4 kernels differ by CPU
PROMPT = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6]


def table_model(folder, transitions: dict, vocab: int = 10) -> str:
    """A model folder whose logits after token t are 20 at TRANSITIONS.get(t, (t + 1) % (vocab - 1)), -20
    elsewhere; EOS (and pad, as in many real models) is vocab - 1, never chosen unless a transition names it."""
    table = np.full((vocab, vocab), -20.0, dtype=np.float32)
    for token in range(vocab):
        table[token, transitions.get(token, (token + 1) % (vocab - 1))] = 20.0
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", "sequence"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT32, ["batch", "total_sequence"])]
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", vocab])
    graph = helper.make_graph([helper.make_node("Gather", ["table", "input_ids"], ["logits"], axis=0)], "table",
                              inputs, [logits], [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    decoder = {"session_options": {"provider_options": []}, "filename": "model.onnx", "head_size": 1,
               "hidden_size": 1, "num_attention_heads": 1, "num_key_value_heads": 1, "num_hidden_layers": 0,
               "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                          "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
               "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                           "present_value_names": "present.%d.value"}}
    config = {"model": {"type": "llama", "vocab_size": vocab, "context_length": 64, "bos_token_id": 0,
                        "eos_token_id": [vocab - 1], "pad_token_id": vocab - 1, "decoder": decoder},
              "search": {"max_length": 64}}
    (folder / "genai_config.json").write_text(json.dumps(config))
    return str(folder)


def generator(og, folder, prompt, max_length, speculative=None, **search):
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max_length, **search)
    if speculative:
        params.set_speculative_options(**speculative)
    generated = og.Generator(model, params)
    generated.append_tokens(np.array([prompt], dtype=np.int32))
    return generated


def finish(generated, logits=None) -> list[int]:
    """Generate to the end; the sequence. LOGITS, a list, gets each step's get_logits first."""
    while not generated.is_done():
        if logits is not None:
            logits.append(generated.get_logits()[0, -1].copy())
        generated.generate_next_token()
    return [int(token) for token in generated.get_sequence(0)]


def counted(stats: dict) -> dict:
    return {name: stats[name] for name in COUNTED}


def stream_and_stats(og, folder, prompt, max_length, speculative=None, **search):
    generated = generator(og, folder, prompt, max_length, speculative, **search)
    return finish(generated), counted(generated.get_speculative_stats())


@pytest.fixture(scope="module")
def cycle(tmp_path_factory) -> str:
    """1 -> 2 -> ... -> 8 -> 0 -> 1: a prompt that holds part of the cycle is continued by it."""
    return table_model(tmp_path_factory.mktemp("cycle"), {})


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("options", [
    dict(ngram_size=2), dict(ngram_size=3, max_draft_tokens=2), dict(ngram_size=2, max_draft_tokens=16),
    dict(ngram_size=2, max_draft_tokens=3, ngram_chained_lookup=True), dict(ngram_size=4, max_draft_tokens=1),
], ids=["n2-k4", "n3-k2", "n2-k16", "n2-k3-chained", "n4-k1"])
@pytest.mark.parametrize("max_length", [12, 30])
def test_table_model_streams_and_stats_are_the_peers(engine, cycle, options, max_length):
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2]
    without = stream_and_stats(engine, cycle, prompt, max_length)[0]
    ours = stream_and_stats(engine, cycle, prompt, max_length, options)
    theirs = stream_and_stats(peer, cycle, prompt, max_length, options)
    assert ours[0] == without == theirs[0]
    assert ours[1] == theirs[1]
    assert ours[1]["rounds"] > 0 or max_length == 12  # one token to go: a 3-token key may have no match yet


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_chained_lookup_follows_the_index_past_the_copied_tokens(engine, tmp_path):
    # 1 -> 2 -> 1 -> 2 ...: after "1 2 1" the copy holds one token, the chain as many as asked.
    folder = table_model(tmp_path / "pair", {1: 2, 2: 1})
    for options in (dict(ngram_size=2, max_draft_tokens=6), dict(ngram_size=2, max_draft_tokens=6,
                                                                  ngram_chained_lookup=True)):
        ours = stream_and_stats(engine, folder, [1, 2, 1], 20, options)
        assert ours == stream_and_stats(peer, folder, [1, 2, 1], 20, options)
        assert ours[0] == stream_and_stats(engine, folder, [1, 2, 1], 20)[0]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_cooldown_takes_one_ordinary_step_after_three_rejected_rounds(engine, tmp_path):
    # The prompt's pairs (1 4, 2 4, 3 4) always draft 4 after 1, 2, 3; the model says 2, 3, 1.
    folder = table_model(tmp_path / "cooldown", {1: 2, 2: 3, 3: 1})
    prompt = [1, 4, 2, 4, 3, 4, 1]
    options = dict(ngram_size=2, max_draft_tokens=2, cooldown=True)
    ours, theirs = (generator(og, folder, prompt, len(prompt) + 5, options) for og in (engine, peer))
    for _ in range(3):
        ours.generate_next_token()
        theirs.generate_next_token()
        assert counted(ours.get_speculative_stats()) == counted(theirs.get_speculative_stats())
    assert ours.get_speculative_stats()["cooldown_remaining"] == 1
    assert finish(ours) == finish(theirs)
    assert counted(ours.get_speculative_stats()) == counted(theirs.get_speculative_stats())


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("fixture", KV_FIXTURES)
def test_drafts_change_neither_tokens_nor_logits_on_kv_cache_models(engine, fixture):
    """Every round rolls the cache back (drafts rejected, or accepted in part): the logits after it must be
    those of decoding without drafts, step for step."""
    folder = FIXTURE_MODELS / fixture
    options = dict(ngram_size=2, max_draft_tokens=4)
    logits_on, logits_off = [], []
    on = generator(engine, folder, PROMPT, 60, options)
    tokens_on = finish(on, logits_on)
    tokens_off = finish(generator(engine, folder, PROMPT, 60), logits_off)
    assert tokens_on == tokens_off
    np.testing.assert_allclose(np.array(logits_on), np.array(logits_off), atol=1e-4, rtol=0)
    stats = on.get_speculative_stats()
    assert stats["rounds"] > 0 and stats["draft_tokens_evaluated"] > 0


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("fixture", FP32_FIXTURES)
def test_kv_cache_streams_and_stats_are_the_peers(engine, fixture):
    folder = FIXTURE_MODELS / fixture
    options = dict(ngram_size=2, max_draft_tokens=4)
    assert stream_and_stats(engine, folder, PROMPT, 60, options) == stream_and_stats(peer, folder, PROMPT, 60,
                                                                                      options)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("folder_name", ["cycle", "llama-fp32"])
def test_seeded_sampling_draws_the_stream_it_draws_without_drafts(engine, cycle, folder_name):
    """The peer's rule for n-gram drafts under sampling: draw from each verified row, accept while the draw is
    the draft. One draw per token either way, so a seed gives the same stream with and without drafts."""
    folder = cycle if folder_name == "cycle" else FIXTURE_MODELS / folder_name
    search = dict(do_sample=True, random_seed=7, top_k=5, temperature=0.7)
    options = dict(ngram_size=2, max_draft_tokens=3)
    ours = stream_and_stats(engine, folder, PROMPT, 40, options, **search)
    assert ours[0] == stream_and_stats(engine, folder, PROMPT, 40, **search)[0]
    assert ours == stream_and_stats(peer, folder, PROMPT, 40, options, **search)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_repetition_penalty_and_min_length_apply_to_every_verified_row(engine, tmp_path):
    folder = table_model(tmp_path / "penalised", {3: 9}, vocab=10)  # 3 -> EOS, held off by min_length
    search = dict(repetition_penalty=1.5, min_length=20)
    options = dict(ngram_size=2, max_draft_tokens=4)
    prompt = [1, 2, 3, 4, 5, 1, 2]
    ours = stream_and_stats(engine, folder, prompt, 30, options, **search)
    assert ours[0] == stream_and_stats(engine, folder, prompt, 30, **search)[0]
    assert ours == stream_and_stats(peer, folder, prompt, 30, options, **search)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_rewind_and_append_in_the_middle_of_a_round(engine, cycle):
    """A round's accepted tokens are visible one per call; rewinding or appending then drops the drafts still
    in the cache, and decoding goes on as without drafts."""
    def play(og, options):
        generated = generator(og, cycle, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1], 40, options)
        generated.generate_next_token()
        generated.generate_next_token()
        first = generated.get_sequence(0).tolist()
        generated.rewind_to(11)
        generated.generate_next_token()
        generated.append_tokens(np.array([[5, 6]], dtype=np.int32))
        generated.generate_next_token()
        generated.generate_next_token()
        return first, finish(generated)

    # Against itself only: after rewind_to the peer re-appends the first dropped token, with drafts or without
    # (README, "Differences").
    options = dict(ngram_size=2, max_draft_tokens=8)
    assert play(engine, options) == play(engine, None)
    assert play(peer, options) == play(peer, None)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_get_logits_in_a_round_is_the_verified_row(engine, cycle):
    on = generator(engine, cycle, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1], 20, dict(ngram_size=2))
    off = generator(engine, cycle, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1], 20)
    logits_on, logits_off = [], []
    assert finish(on, logits_on) == finish(off, logits_off)
    np.testing.assert_array_equal(np.array(logits_on), np.array(logits_off))
    assert on.get_speculative_stats()["draft_tokens_accepted"] > 0


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_options_round_trip_as_the_peers(engine):
    options = dict(ngram_size=3, max_draft_tokens=7, ngram_chained_lookup=True, min_adaptive_k=2, cooldown=True)
    dicts = []
    for og in (engine, peer):
        params = og.GeneratorParams(og.Model(str(FIXTURE_MODELS / "llama-fp32")))
        defaults = params.get_speculative_options()
        params.set_speculative_options(**options)
        dicts.append((defaults, params.get_speculative_options()))
    assert dicts[0] == dicts[1]


BAD_OPTIONS = [dict(ngram_size=1), dict(ngram_size=17), dict(ngram_size=2.5), dict(ngram_size="3"),
               dict(max_draft_tokens=0), dict(max_draft_tokens=17), dict(min_adaptive_k=-1), dict(min_adaptive_k=17),
               dict(unknown=1), dict(cooldown=1), dict(ngram_size=True), dict(ngram_size=np.int64(3)),
               dict(max_draft_tokens=1e10)]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("options", BAD_OPTIONS, ids=[repr(options) for options in BAD_OPTIONS])
def test_bad_options_are_refused_with_the_peers_message(engine, options):
    messages = []
    for og in (engine, peer):
        params = og.GeneratorParams(og.Model(str(FIXTURE_MODELS / "llama-fp32")))
        with pytest.raises(RuntimeError) as error:
            params.set_speculative_options(**options)
        messages.append(str(error.value).strip())
    assert messages[0] == messages[1]


REFUSED = [("llama-fp32", dict(ngram_size=3), dict(batch_size=2)),
           ("llama-fp32", dict(ngram_size=3), dict(num_beams=2)),
           ("llama-fp32", dict(ngram_size=3), dict(num_beams=2, num_return_sequences=2)),
           ("llama-fp32", dict(ngram_chained_lookup=True), {}),
           ("gpt2-fp32", dict(ngram_size=3), {})]


def assert_refused_alike(engine, folder: str, options: dict, search: dict) -> None:
    """A Generator on FOLDER with search options SEARCH and speculative OPTIONS is refused by ENGINE in the
    peer's words."""
    messages = []
    for og in (engine, peer):
        model = og.Model(folder)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=30, **search)
        params.set_speculative_options(**options)
        with pytest.raises(RuntimeError) as error:
            og.Generator(model, params)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("fixture, options, search", REFUSED, ids=[repr(case[1:]) for case in REFUSED])
def test_generators_are_refused_as_by_the_peer(engine, fixture, options, search):
    assert_refused_alike(engine, str(FIXTURE_MODELS / fixture), options, search)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_set_logits_and_snapshot_in_the_middle_of_a_round(engine, cycle):
    """set_logits replaces the verified row it finds; a snapshot taken in a round restores to a generator that
    decodes as one without drafts."""
    def play(options):
        generated = generator(engine, cycle, [1, 2, 3, 4, 5, 6, 7, 8, 0, 1], 30, options)
        generated.generate_next_token()
        generated.generate_next_token()
        forced = np.full((1, 10), -5.0, dtype=np.float32)
        forced[0, 7] = 5.0
        generated.get_logits()
        generated.set_logits(forced)
        generated.generate_next_token()
        snapshot = generated.snapshot()
        params = engine.GeneratorParams(generated.model)
        params.set_search_options(max_length=30)
        if options:
            params.set_speculative_options(**options)
        restored = engine.Generator(generated.model, params)
        restored.restore(snapshot)
        return finish(generated), finish(restored)

    with_drafts = play(dict(ngram_size=2, max_draft_tokens=8))
    assert with_drafts == play(None)
    assert with_drafts[0][12] == 7 and with_drafts[0] == with_drafts[1]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("section", [{"ngram_size": 2, "max_draft_tokens": 3}, {"ngram_size": 1}, {"cooldown": 1},
                                     {"unknown": 2}, {"ngram_size": 3.0}], ids=repr)
def test_the_speculative_section_of_genai_config_json(engine, tmp_path, section):
    """Its options start every GeneratorParams, as the peer's; a bad one refuses the folder, in the peer's
    words (the peer wraps them in its JSON parser's)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for file in (FIXTURE_MODELS / "llama-fp32").iterdir():
        (folder / file.name).symlink_to(file)
    config = json.loads((FIXTURE_MODELS / "llama-fp32" / "genai_config.json").read_text())
    (folder / "genai_config.json").unlink()
    (folder / "genai_config.json").write_text(json.dumps({**config, "speculative": section}))
    try:
        expected = peer.GeneratorParams(peer.Model(str(folder))).get_speculative_options()
    except RuntimeError as error:
        with pytest.raises(RuntimeError, match="^genai_config.json: speculative: ") as ours:
            engine.Model(str(folder))
        assert str(ours.value).split("speculative: ", 1)[1] in str(error)
        return
    assert engine.GeneratorParams(engine.Model(str(folder))).get_speculative_options() == expected
    assert stream_and_stats(engine, folder, PROMPT, 40) == stream_and_stats(peer, folder, PROMPT, 40)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_no_repeat_ngram_size_holds_in_verified_rows(engine, tmp_path):
    """no_repeat_ngram_size bans the drafts a 1 -> 2 -> 1 table model keeps proposing. gentwin applies it to
    every verified row as to every ordinary step; the peer's verification skips it (README, "Differences")."""
    folder = table_model(tmp_path / "pair", {1: 2, 2: 1})
    search, options = dict(no_repeat_ngram_size=2), dict(ngram_size=2, max_draft_tokens=4)
    plain = stream_and_stats(peer, folder, [1, 2, 1], 16, **search)[0]
    assert stream_and_stats(engine, folder, [1, 2, 1], 16, options, **search)[0] == plain
    assert stream_and_stats(engine, folder, [1, 2, 1], 16, **search)[0] == plain
    assert stream_and_stats(peer, folder, [1, 2, 1], 16, options, **search)[0] != plain


# -- draft-model drafting -------------------------------------------------------------------------------------

DRAFT_COUNTED = tuple(name for name in COUNTED if name not in ("ngram_history_syncs", "ngram_history_tokens_synced",
                                                                "draft_forward_passes"))


def with_draft(folder, target: str, draft: str | None) -> str:
    """FOLDER: the fixture TARGET, with the fixture DRAFT (None: the target itself) as model.draft, in draft/."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in (FIXTURE_MODELS / target).iterdir():
        if file.name != "genai_config.json":
            (folder / file.name).symlink_to(file)
    config = json.loads((FIXTURE_MODELS / target / "genai_config.json").read_text())
    draft_block = json.loads((FIXTURE_MODELS / (draft or target) / "genai_config.json").read_text())["model"]["decoder"]
    if draft:
        (folder / "draft").mkdir()
        for name in ("model.onnx", "model.onnx.data"):
            (folder / "draft" / name).symlink_to(FIXTURE_MODELS / draft / name)
        draft_block["filename"] = "draft/model.onnx"
    config["model"]["draft"] = draft_block
    (folder / "genai_config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("draft", [None, "gemma-fp32"], ids=["itself", "gemma"])
@pytest.mark.parametrize("options", [{}, dict(max_draft_tokens=3), dict(max_draft_tokens=1)], ids=repr)
def test_a_draft_model_gives_the_peers_stream_and_stats(engine, tmp_path, draft, options):
    """A draft that is the target accepts every token; another model's drafts are mostly rejected, and both
    KV caches are rolled back each round. The stream is the target's without drafts either way."""
    folder = with_draft(tmp_path / "model", "llama-fp32", draft)
    ours = stream_and_stats(engine, folder, [5, 6, 7, 8], 40, options)
    theirs = stream_and_stats(peer, folder, [5, 6, 7, 8], 40, options)
    assert ours[0] == theirs[0] == stream_and_stats(engine, FIXTURE_MODELS / "llama-fp32", [5, 6, 7, 8], 40)[0]
    assert {name: ours[1][name] for name in DRAFT_COUNTED} == {name: theirs[1][name] for name in DRAFT_COUNTED}
    assert ours[1]["draft_forward_passes"] > 0 and ours[1]["rounds"] > 0


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("draft", ["llama-int4", "mistral-mha-fp32"])
def test_other_drafts_change_neither_tokens_nor_logits(engine, tmp_path, draft):
    """The target quantized, which agrees often; a MultiHeadAttention graph run one token at a time over its
    past (the peer cannot run it as a draft: it gives it the target's shared KV buffer), which rarely does."""
    folder = with_draft(tmp_path / "model", "llama-fp32", draft)
    logits_on, logits_off = [], []
    on = generator(engine, folder, PROMPT, 50, dict(max_draft_tokens=4))
    assert finish(on, logits_on) == finish(generator(engine, FIXTURE_MODELS / "llama-fp32", PROMPT, 50), logits_off)
    np.testing.assert_allclose(np.array(logits_on), np.array(logits_off), atol=1e-4, rtol=0)
    stats = on.get_speculative_stats()
    assert stats["correction_tokens"] > 0 and (stats["draft_tokens_accepted"] > 0 or draft != "llama-int4")


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_a_draft_model_through_rewind_and_append(engine, tmp_path):
    folder = with_draft(tmp_path / "model", "llama-fp32", "gemma-fp32")

    def play(og, path):
        generated = generator(og, path, [5, 6, 7, 8], 40, None)
        generated.generate_next_token()
        generated.generate_next_token()
        generated.rewind_to(5)
        generated.append_tokens(np.array([[9, 10]], dtype=np.int32))
        generated.generate_next_token()
        generated.append_tokens(np.array([[11]], dtype=np.int32))
        return finish(generated)

    assert play(engine, folder) == play(engine, FIXTURE_MODELS / "llama-fp32")


DRAFT_REFUSED = [({}, dict(batch_size=2)), ({}, dict(num_beams=2)), ({}, dict(no_repeat_ngram_size=2)),
                 (dict(ngram_size=2), {})]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("options, search", DRAFT_REFUSED, ids=[repr(case) for case in DRAFT_REFUSED])
def test_draft_model_generators_are_refused_as_by_the_peer(engine, tmp_path, options, search):
    folder = with_draft(tmp_path / "model", "llama-fp32", None)
    assert_refused_alike(engine, folder, options, search)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_a_draft_model_refuses_sampling(engine, tmp_path):
    """The peer accepts draft tokens by rejection sampling with its own random stream; gentwin says it has not
    got that rule rather than sample another way."""
    model = engine.Model(with_draft(tmp_path / "model", "llama-fp32", None))
    params = engine.GeneratorParams(model)
    params.set_search_options(do_sample=True, random_seed=1, max_length=20)
    with pytest.raises(RuntimeError, match="rejection sampling"):
        engine.Generator(model, params)


def test_the_check_family_drafts_and_avoids_the_peers_limits():
    """gentwin check's speculative scenarios draft (most have rounds), and with the peer as a side they only
    generate to the end, without no_repeat_ngram_size."""
    from hypothesis import HealthCheck, Phase, given, settings

    import gentwin.fast as fast
    from gentwin.conformance.check import same_scenarios_for_a_seed
    from gentwin.conformance.families import FAMILIES, Capabilities
    from gentwin.conformance.model_facts import ModelFacts
    from gentwin.conformance.scenarios import Player
    from gentwin.conformance.verdict import Side

    folder = FIXTURE_MODELS / "llama-fp32"
    family = next(family for family in FAMILIES if family.name == "speculative")
    models = {og: og.Model(str(folder)) for og in (fast, peer)}
    for sides, peer_plays in (([fast], False), ([fast, peer], True)):
        capabilities = Capabilities.of([Side(og, models[og]) for og in sides])
        found = []

        @settings(max_examples=15, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(family.strategy(ModelFacts.read(folder), capabilities))
        def collect(scenario):
            found.append(scenario)

        with same_scenarios_for_a_seed():
            collect()
        drafted = 0
        for scenario in found:
            player = Player(fast, models[fast], scenario)
            player.play()
            assert scenario.speculative["ngram_size"] >= 2
            drafted += player.generator.get_speculative_stats()["rounds"] > 0
            if peer_plays:
                assert scenario.steps == (("finish",),) and "no_repeat_ngram_size" not in scenario.options
        assert drafted >= len(found) * 2 // 3  # a turn may rewind the repeated prompt away first


def _sliding_cache(folder, with_draft_model: bool) -> str:
    """FOLDER: llama-fp32 with decoder.sliding_window slide_key_value_cache true (onnxruntime-genai's
    WindowedKeyValueCache, for QNN graphs), and llama-fp32 itself as model.draft if WITH_DRAFT_MODEL."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in (FIXTURE_MODELS / "llama-fp32").iterdir():
        if file.name != "genai_config.json":
            (folder / file.name).symlink_to(file)
    config = json.loads((FIXTURE_MODELS / "llama-fp32" / "genai_config.json").read_text())
    config["model"]["decoder"]["sliding_window"] = {"window_size": 8, "slide_key_value_cache": True}
    if with_draft_model:
        config["model"]["draft"] = json.loads((FIXTURE_MODELS / "llama-fp32" / "genai_config.json").read_text()
                                              )["model"]["decoder"]
    (folder / "genai_config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_a_physically_sliding_kv_cache_is_refused_at_model_where_the_peer_loads_it(engine, tmp_path):
    """gentwin runs no WindowedKeyValueCache and says so at Model(); with a draft model in the peer's words, as
    the peer does. Without one the peer loads such a folder, refuses n-gram drafting on it when the Generator
    is made and fails the first run of a CPU graph in onnxruntime's words (README, "The peer's own test
    suite"): this pins the peer's side, to drop the note when it changes."""
    folder = _sliding_cache(tmp_path / "sliding", with_draft_model=False)
    with pytest.raises(RuntimeError, match="slides the key-value cache"):
        engine.Model(folder)
    model = peer.Model(folder)
    params = peer.GeneratorParams(model)
    params.set_search_options(max_length=12)
    params.set_speculative_options(ngram_size=3)
    with pytest.raises(RuntimeError, match="N-gram decoding requires a rewindable KV cache"):
        peer.Generator(model, params)
    with pytest.raises(RuntimeError, match="Expected input data type to be uint8_t for WindowedKeyValueCache"):
        generator(peer, folder, PROMPT, 12)
    drafted = _sliding_cache(tmp_path / "drafted", with_draft_model=True)
    refusals = []
    for og in (engine, peer):
        with pytest.raises(RuntimeError, match="does not support physically sliding KV caches") as refusal:
            og.Model(drafted)
        refusals.append(str(refusal.value))
    assert refusals[0] == refusals[1]
