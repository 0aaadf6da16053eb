"""One decoder state for every layer kind (gentwin/decoder_state.py), both engines live against onnxruntime-genai
0.18.0 on the fixtures of gentwin.fixtures.layouts.LAYER_KINDS, built once per session:

- lfm2-conv-fp32: lfm2's hybrid, conv layers (CausalConvWithState, past.%d.conv) around an attention layer;
- llama-nocache-fp32: no decoder layer, so no cache at all;
- gemma2-window-fp32: gemma2's local layer with a windowed KV cache (window 6, so 22 slots on the CPU) before
  a global one; the streams here run past those 22 positions, so the cache evicts;
- llama-hidden-fp32: the builder's include_hidden_states=1, a hidden_states output beside the logits;
- qwen35-linear-fp32: Qwen3.5's hybrid, linear-attention layers (CausalConvWithState and LinearAttention:
  past.%d.conv and past.%d.recurrent) around an attention layer, [3, B, S] position_ids.

Where the peer refuses (a windowed cache with right-padded batches or beams, rewinds it cannot serve), gentwin
refuses too, with a GentwinError, before anything changes: the generator then runs on as if never asked. Where it
fails (beams on [3, B, S] positions), both engines run alike.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime_genai as og
import pytest

from gentwin.config import ConfigError
from gentwin.errors import GentwinError
from tests.conftest import ENGINE_IDS, ENGINES, load
from tests.helpers import new_generator

by_engine = pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
ALL = ["lfm2-conv-fp32", "llama-nocache-fp32", "gemma2-window-fp32", "llama-hidden-fp32", "qwen35-linear-fp32"]
WINDOWED = "gemma2-window-fp32"
LINEAR = "qwen35-linear-fp32"
WINDOW_SLOTS = 6 + 16  # window_size plus the peer's default slack on the CPU
PEER_RUNS_BATCHES = [name for name in ALL if name != WINDOWED]
PEER_RUNS_BEAMS = [name for name in PEER_RUNS_BATCHES if name != LINEAR]
PROMPT = [5, 17, 42, 9, 300, 7]
SECOND_ROW = [12, 400, 33]  # padded on the right to PROMPT's length


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    from gentwin.fixtures.build import build

    folders = build(str(tmp_path_factory.mktemp("layer_kinds")), size="layer_kinds")
    return {folder.rsplit("/", 1)[-1]: folder for folder in folders}


def generator(module, folder, prompt=(PROMPT,), **options):
    return new_generator(module, folder, prompt, **{"max_length": 48, **options})


def generate(gen, count=None) -> None:
    while not gen.is_done() and (count is None or count > 0):
        gen.generate_next_token()
        count = None if count is None else count - 1


def sequences(gen, rows=1) -> list[list[int]]:
    return [[int(token) for token in gen.get_sequence(row)] for row in range(rows)]


def padded_batch(pad: int) -> list[list[int]]:
    return [PROMPT, SECOND_ROW + [pad] * (len(PROMPT) - len(SECOND_ROW))]


def pad_id(folder) -> int:
    return load("gentwin.reference", folder).config.pad_token_id


def resident_positions(tokens: int, window: int = 6, slots: int = WINDOW_SLOTS) -> int:
    """How many positions a windowed buffer holds after TOKENS (reference/ops/group_query_attention.py): all up
    to its slots, then it evicts slots - window + 1 at once each time it is full."""
    evicted_at_once = slots - window + 1
    return tokens if tokens <= slots else tokens - evicted_at_once * -(-(tokens - slots) // evicted_at_once)


@by_engine
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("options", [{}, {"do_sample": True, "top_k": 20, "random_seed": 7}], ids=["greedy", "sampled"])
def test_streams_match_the_peer(engine, models, name, options):
    expected, ours = generator(og, models[name], **options), generator(engine, models[name], **options)
    generate(expected), generate(ours)
    assert sequences(ours) == sequences(expected)
    assert len(sequences(ours)[0]) > WINDOW_SLOTS  # past the windowed cache's slots: it has evicted


@by_engine
@pytest.mark.parametrize("name, options", [*((name, {}) for name in PEER_RUNS_BATCHES),
                                           *((name, {"num_beams": 3, "num_return_sequences": 2})
                                             for name in PEER_RUNS_BEAMS)],
                         ids=[*(f"{name}-padded" for name in PEER_RUNS_BATCHES),
                              *(f"{name}-beams" for name in PEER_RUNS_BEAMS)])
def test_batches_and_beams_match_the_peer(engine, models, name, options):
    """A right-padded batch (Qwen3.5's [3, B, S] positions: the peer's masks after the prompt are all ones, its
    attention layer then reads the pads' keys too) and beam search."""
    prompt = padded_batch(pad_id(models[name])) if not options else [PROMPT]
    rows = 2
    expected, ours = generator(og, models[name], prompt, **options), generator(engine, models[name], prompt, **options)
    generate(expected), generate(ours)
    assert sequences(ours, rows) == sequences(expected, rows)


@by_engine
def test_a_windowed_cache_refuses_a_right_padded_batch_before_anything_changes(engine, models):
    folder = models[WINDOWED]
    with pytest.raises(RuntimeError, match="seqlens_k"):  # the peer, at its first run
        generate(generator(og, folder, padded_batch(pad_id(folder))))
    model = load(engine.__name__, folder)
    params = engine.GeneratorParams(model)
    params.set_search_options(batch_size=2, max_length=48)
    ours = engine.Generator(model, params)
    with pytest.raises(GentwinError, match="right-padded batch: row 1 has 3 tokens"):
        ours.append_tokens(np.array(padded_batch(pad_id(folder)), dtype=np.int32))
    assert ours.token_count() == 0
    unpadded = [PROMPT, [12, 400, 33, 8, 9, 10]]
    ours.append_tokens(np.array(unpadded, dtype=np.int32))
    expected = generator(og, folder, unpadded)
    generate(ours), generate(expected)
    assert sequences(ours, 2) == sequences(expected, 2)


@by_engine
@pytest.mark.parametrize("options", [{"num_beams": 2}, {"past_present_share_buffer": False}])
def test_a_windowed_cache_needs_its_shared_buffer(engine, models, options):
    """The peer gives GroupQueryAttention an empty past with beams or without the shared buffer; gentwin says so
    when the Generator is made."""
    folder = models[WINDOWED]
    with pytest.raises(RuntimeError, match=r"capacity \(0\)"):
        generate(generator(og, folder, **options))
    with pytest.raises(GentwinError, match="beam search|past_present_share_buffer"):
        generator(engine, folder, **options)


@by_engine
def test_a_windowed_cache_holds_its_window(engine, models):
    """max_length 5 would give the windowed layer 5 slots, fewer than its window of 6."""
    with pytest.raises(RuntimeError, match=r"capacity \(5\) must be at least local_window_size \(6\)"):
        generate(generator(og, models[WINDOWED], [[5, 6, 7]], max_length=5))
    with pytest.raises(GentwinError, match="max_length 5 is below the sliding window of 6 positions"):
        generator(engine, models[WINDOWED], [[5, 6, 7]], max_length=5)
    expected, ours = (generator(module, models[WINDOWED], [[5, 6, 7]], max_length=6) for module in (og, engine))
    generate(expected), generate(ours)
    assert sequences(ours) == sequences(expected)


def chat(module, folder):
    """Two turns: the first prompt and 5 tokens, then a second turn appended and 20 more (the peer is made to
    run its last generated token first: README, Differences 1)."""
    gen = generator(module, folder)
    generate(gen, 5)
    if module is og:
        gen.get_logits()
    gen.append_tokens(np.array([[61, 62, 63, 64]], dtype=np.int32))
    generate(gen, 20)
    return sequences(gen)


@by_engine
@pytest.mark.parametrize("name", ALL)
def test_chat_continuation_matches_the_peer(engine, models, name):
    assert chat(engine, models[name]) == chat(og, models[name])


@by_engine
@pytest.mark.parametrize("name", ["llama-nocache-fp32", "llama-hidden-fp32", WINDOWED])
def test_rewind_and_reappend_matches_the_peer(engine, models, name):
    """Back to 4 tokens after 12 (within the windowed cache's slots, so nothing has been evicted)."""
    streams = []
    for module in (og, engine):
        gen = generator(module, models[name])
        generate(gen, 6)
        gen.rewind_to(4)
        gen.append_tokens(np.array([[70, 71]], dtype=np.int32))
        generate(gen, 30)
        streams.append(sequences(gen))
    assert streams[1] == streams[0]


def assert_refused_and_unchanged(engine, folder, steps, lengths, peer_says, gentwin_says):
    """After STEPS tokens, rewind_to each of LENGTHS is refused by the peer and by ENGINE, which then goes on as
    a generator never asked (the peer's refusal comes after it rewound its sequence, which it then lacks:
    "GenerateNextToken called with no prior state")."""
    peer, ours, untouched = generator(og, folder), generator(engine, folder), generator(og, folder)
    for gen in (peer, ours, untouched):
        generate(gen, steps)
    for length in lengths:
        with pytest.raises(RuntimeError, match=peer_says):
            peer.rewind_to(length)
        with pytest.raises(GentwinError, match=gentwin_says):
            ours.rewind_to(length)
    assert ours.token_count() == len(PROMPT) + steps
    generate(ours, 10), generate(untouched, 10)
    assert sequences(ours) == sequences(untouched)


@by_engine
def test_a_windowed_cache_refuses_to_rewind_past_what_it_evicted(engine, models):
    # 26 tokens, 25 of them run: 3 more than the 22 slots
    message = "holds only the last 22 of 25 positions"
    assert_refused_and_unchanged(engine, models[WINDOWED], 20, (24, 10, 0), message, message)


def test_beams_on_three_rows_of_positions_where_the_peer_fails_agree_on_both_engines(models):
    """The peer multiplies the first dimension of [3, B, S] position_ids by the beams, and onnxruntime refuses
    them at the first run; both engines run the beams (reordering the recurrent states), alike."""
    options = {"num_beams": 3, "num_return_sequences": 2}
    with pytest.raises(RuntimeError, match="invalid dimensions for input: position_ids"):
        generate(generator(og, models[LINEAR], **options))
    streams = []
    for engine in ENGINES:
        gen = generator(engine, models[LINEAR], **options)
        generate(gen)
        streams.append(sequences(gen, 2))
    assert streams[0] == streams[1] and streams[0][0] != streams[0][1]


@by_engine
def test_pads_inside_prompts_on_three_rows_of_positions_match_the_peer(engine, models):
    """qwen3_5_text is of the peer's Qwen-VL family: a pad anywhere is masked and at position 0, even in a batch
    of one (the linear-attention layers run it all the same: they read no mask)."""
    pad = pad_id(models[LINEAR])
    for prompt in ([PROMPT[:2] + [pad] + PROMPT[2:]], [PROMPT, SECOND_ROW[:1] + [pad] + SECOND_ROW[1:] + [pad] * 2]):
        expected, ours = generator(og, models[LINEAR], prompt), generator(engine, models[LINEAR], prompt)
        generate(expected), generate(ours)
        assert sequences(ours, len(prompt)) == sequences(expected, len(prompt))


@by_engine
def test_a_recurrent_state_refuses_a_partial_rewind(engine, models):
    assert_refused_and_unchanged(engine, models[LINEAR], 3, (8, 4), "not supported without a snapshot",
                                 "linear-attention layer 0's state")


@by_engine
def test_a_recurrent_state_rewinds_to_the_start_as_the_peer_does(engine, models):
    """rewind_to(0) zeroes every state, so the same prompt then gives the first stream again."""
    streams = []
    for module in (og, engine):
        gen = generator(module, models[LINEAR])
        generate(gen, 6)
        gen.rewind_to(0)
        gen.append_tokens(np.array([PROMPT[:4]], dtype=np.int32))
        generate(gen, 20)
        streams.append(sequences(gen))
    assert streams[1] == streams[0]
    fresh = generator(engine, models[LINEAR], (PROMPT[:4],))
    generate(fresh, 20)
    assert sequences(fresh) == streams[1]


@by_engine
def test_a_conv_state_refuses_every_rewind(engine, models):
    assert_refused_and_unchanged(engine, models["lfm2-conv-fp32"], 3, (8, 4, 0), "not supported for lfm2",
                                 "conv layer 0's state")


@by_engine
@pytest.mark.parametrize("name, output", [("llama-hidden-fp32", "hidden_states"), ("lfm2-conv-fp32", "present.2.conv"),
                                          ("lfm2-conv-fp32", "present.1.key"), (WINDOWED, "present.0.key"),
                                          (LINEAR, "present.2.conv"), (LINEAR, "present.0.recurrent")])
def test_get_output_matches_the_peer(engine, models, name, output):
    """After the prompt and after each one-token run (gentwin.fast once bound hidden_states for the prompt's
    shape only): shapes as the peer's; values within float32 noise (a windowed buffer's slots beyond the
    resident positions are not compared: onnxruntime leaves old keys there)."""
    peer, ours = generator(og, models[name]), generator(engine, models[name])
    for step in range(WINDOW_SLOTS):
        expected, got = peer.get_output(output), ours.get_output(output)
        assert got.shape == expected.shape, (step, output)
        resident = resident_positions(len(PROMPT) + step)
        compared = (slice(None),) * 2 + (slice(0, resident),) if name == WINDOWED else ...
        np.testing.assert_allclose(got[compared], expected[compared], rtol=0, atol=1e-4, err_msg=f"step {step}")
        for gen in (peer, ours):
            gen.generate_next_token()
            gen.get_logits()  # run the model on the new token, so get_output shows that run


@by_engine
@pytest.mark.parametrize("name", ALL)
def test_a_snapshot_restores_every_layer_kind(engine, models, name):
    """A generator restored from a snapshot taken past the windowed cache's slots goes on as the original."""
    original = generator(engine, models[name])
    generate(original, 20)
    snapshot = original.snapshot()
    model = load(engine.__name__, models[name])
    params = engine.GeneratorParams(model)
    params.set_search_options(max_length=48)
    restored = engine.Generator(model, params)
    restored.restore(snapshot)
    generate(original, 12), generate(restored, 12)
    assert sequences(restored) == sequences(original)


@by_engine
def test_a_windowed_snapshot_restores_into_fewer_slots(engine, models):
    """max_length 16 gives the windowed layer 16 slots, not 22; a snapshot of 12 tokens restores into them and
    goes on as the original (one with more tokens than 16 could not be restored: it exceeds max_length)."""
    original = generator(engine, models[WINDOWED])
    generate(original, 6)
    model = load(engine.__name__, models[WINDOWED])
    params = engine.GeneratorParams(model)
    params.set_search_options(max_length=16)
    restored = engine.Generator(model, params)
    restored.restore(original.snapshot())
    generate(original), generate(restored)
    assert sequences(restored)[0] == sequences(original)[0][:16]


def folder_with(models, tmp_path, name, edit):
    target = tmp_path / name
    shutil.copytree(models[name], target)
    config = json.loads((target / "genai_config.json").read_text())
    edit(config["model"])
    (target / "genai_config.json").write_text(json.dumps(config))
    return str(target)


@by_engine
@pytest.mark.parametrize("name, edit, message", [
    ("lfm2-conv-fp32", lambda model: model["decoder"].pop("layer_types"), "layer_types' is missing"),
    ("lfm2-conv-fp32", lambda model: model["decoder"]["layer_types"].pop(), "has 2 entries, but"),
    ("lfm2-conv-fp32", lambda model: model["decoder"]["inputs"].pop("past_conv_names"), "past_conv_names"),
    (LINEAR, lambda model: model["decoder"]["inputs"].pop("past_conv_names"),  # the peer: "Model input was not
     # found: past_key_values.0.conv_state" at the first run
     "'past_key_values.%d.conv_state', but the graph has no input past_key_values.0.conv_state for linear-attention"),
    (WINDOWED, lambda model: model["decoder"]["sliding_window"].pop("slide_key_value_cache"),
     "slides the key-value cache"),
    (WINDOWED, lambda model: model["decoder"]["sliding_window"].update(layers=[2]), "layer numbers below 2"),
], ids=["no-layer-types", "short-layer-types", "conv-names-default", "linear-conv-names-default", "sliding-kv-cache",
        "window-layer"])
def test_a_config_contradicting_its_layer_kinds_is_refused_at_load(engine, models, tmp_path, name, edit, message):
    with pytest.raises(ConfigError, match=message):
        engine.Model(folder_with(models, tmp_path, name, edit))


@by_engine
def test_lfm2_moe_is_a_conv_hybrid_too(engine, models, tmp_path):
    """The builder's lfm2_moe type (LFM2 with MoE MLPs) has lfm2's layer kinds: the same graph under that type
    runs as the peer runs it, and refuses rewinds as it does."""
    folder = folder_with(models, tmp_path, "lfm2-conv-fp32", lambda model: model.update(type="lfm2_moe"))
    assert chat(engine, folder) == chat(og, folder)
    assert_refused_and_unchanged(engine, folder, 3, (4,), "not supported for lfm2_moe", "conv layer 0's state")
