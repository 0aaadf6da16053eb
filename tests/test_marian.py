"""The encoder-decoder marian-ssru model type on both engines, live against the peer, on a tiny fixture
(gentwin.fixtures.marian) whose logits depend on every input the generator feeds."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime_genai as og_peer
import pytest

from gentwin.config import ConfigError
from gentwin.fixtures.marian import PAD_TOKEN_ID, build_marian
from tests.conftest import ENGINE_IDS, ENGINES
from tests.test_peer_api_parity import comparable

PAD = PAD_TOKEN_ID
PADDED_BATCH = [[5, PAD, PAD], [7, 8, 9]]


@pytest.fixture(scope="module")
def marian(tmp_path_factory) -> str:
    return build_marian(str(tmp_path_factory.mktemp("marian") / "marian-ssru"))


def _generator(og, folder, prompt, **options):
    model = og.Model(folder)
    params = og.GeneratorParams(model)
    params.set_search_options(batch_size=len(prompt), **options)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(prompt, dtype=np.int32))
    return generator


def _decode(og, folder, prompt, **options):
    """Every returned sequence, and the logits of every choice made, [R, V] each."""
    generator = _generator(og, folder, prompt, **options)
    logits = []
    while not generator.is_done():
        logits.append(generator.get_logits()[:, 0, :].copy())
        generator.generate_next_token()
    rows = len(prompt) * options.get("num_return_sequences", 1)
    return [generator.get_sequence(row).tolist() for row in range(rows)], logits


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("prompt, options", [
    (PADDED_BATCH, {}),
    ([[5, 6, 7]], {}),
    ([[5, 6, 7]], {"num_beams": 2}),
    (PADDED_BATCH, {"num_beams": 3, "num_return_sequences": 2}),
], ids=["padded-batch", "one-row", "beams", "batch-beams-returned"])
def test_streams_and_logits_equal_the_peers(engine, marian, prompt, options):
    ours, our_logits = _decode(engine, marian, prompt, **options)
    theirs, their_logits = _decode(og_peer, marian, prompt, **options)
    assert ours == theirs
    assert len(our_logits) == len(their_logits)
    for step, (mine, peer) in enumerate(zip(our_logits, their_logits)):
        np.testing.assert_allclose(mine, peer, atol=1e-4, err_msg=f"logits of choice {step}")


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_decoder_inputs_equal_the_peers(engine, marian):
    """The EOS placed at each row's first pad, the mask, the BOS start, the step count and the state."""
    generators = [_generator(og, marian, PADDED_BATCH) for og in (engine, og_peer)]
    names = ["input_ids", "encoder_hidden_states", "encoder_attention_mask", "rnn_states_prev",
             "past_key_values_length"]
    for _ in range(3):
        ours, theirs = ({name: g.get_input(name) for name in names} for g in generators)
        for name in names:
            np.testing.assert_allclose(ours[name], theirs[name], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(*(g.get_output("rnn_states") for g in generators), atol=1e-5)
        for generator in generators:
            generator.generate_next_token()
            generator.get_logits()
    first_run = _generator(engine, marian, PADDED_BATCH)
    assert first_run.get_input("encoder_attention_mask").tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert first_run.get_input("input_ids").tolist() == [PAD, PAD]  # the start token, Marian's pad


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_more_than_one_token_per_row_after_the_prompt_is_refused_as_by_the_peer(engine, marian):
    """In the peer's words. The peer keeps the refused tokens in its sequence; gentwin refuses before any change."""
    ours, theirs = _generator(engine, marian, [[5, 6]]), _generator(og_peer, marian, [[5, 6]])
    for generator in (ours, theirs):
        generator.generate_next_token()
        with pytest.raises(RuntimeError, match="Every batch entry needs exactly one token"):
            generator.append_tokens(np.array([[3, 4]], dtype=np.int32))
    assert ours.get_sequence(0).tolist() == theirs.get_sequence(0).tolist()[:3]
    assert theirs.get_sequence(0).tolist()[3:] == [3, 4]  # the peer's: drop this once the peer checks first


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_rewind_to_zero_runs_the_encoder_again_and_a_partial_rewind_is_refused(engine, marian):
    generator = _generator(engine, marian, [[5, 6]])
    generator.generate_next_token()
    with pytest.raises(RuntimeError, match=r"rewind_to\(1\) is not supported on a marian-ssru model"):
        generator.rewind_to(1)
    generator.rewind_to(0)
    generator.append_tokens(np.array([[7, 8, 9]], dtype=np.int32))
    fresh = _generator(engine, marian, [[7, 8, 9]])
    np.testing.assert_array_equal(generator.get_logits(), fresh.get_logits())
    # The peer keeps its decoder state at rewind_to(0) and refuses the new prompt: drop this once it re-encodes.
    peer = _generator(og_peer, marian, [[5, 6]])
    peer.generate_next_token()
    peer.rewind_to(0)
    with pytest.raises(RuntimeError, match="Every batch entry needs exactly one token"):
        peer.append_tokens(np.array([[7, 8, 9]], dtype=np.int32))


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_snapshot_restores_the_ssru_state(engine, marian):
    model = engine.Model(marian)
    generators = [engine.Generator(model, engine.GeneratorParams(model)) for _ in range(2)]
    for generator, prompt in zip(generators, ([5, 6], [9])):
        generator.append_tokens(np.array([prompt], dtype=np.int32))
    generators[0].generate_next_token()
    generators[1].restore(generators[0].snapshot())
    for generator in generators:
        while not generator.is_done():
            generator.generate_next_token()
    assert generators[1].get_sequence(0).tolist() == generators[0].get_sequence(0).tolist()
    assert generators[0].get_sequence(0).tolist() == _decode(og_peer, marian, [[5, 6]])[0][0]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_ngram_drafting_is_refused_in_the_peers_words(engine, marian):
    messages = []
    for og in (engine, og_peer):
        model = og.Model(marian)
        params = og.GeneratorParams(model)
        params.set_speculative_options(ngram_size=2, max_draft_tokens=2)
        with pytest.raises(RuntimeError) as refusal:
            og.Generator(model, params)
        messages.append(str(refusal.value))
    assert messages[0] == messages[1]


LOG_OPTIONS = dict(generate_next_token=True, append_next_tokens=True, model_input_values=True,
                   model_output_shapes=True, model_output_values=True)


def _run_log(og, folder) -> str:
    lines = []
    og.set_log_callback(lines.append)
    og.set_log_options(enabled=True, **LOG_OPTIONS)
    try:
        generator = _generator(og, folder, [[5, 6]], max_length=5)
        while not generator.is_done():
            generator.generate_next_token()
    finally:
        og.set_log_options(enabled=False, **{name: False for name in LOG_OPTIONS})
        og.set_log_callback(None)
    return "".join(lines)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_the_run_log_is_the_peers(engine, marian):
    """The encoder's run, then the decoder's, inputs in the peer's binding order. The peer's model_output_shapes
    entry names the logits without a shape (it logs them before they are allocated, and no line ends there);
    gentwin writes their shape: the pinned difference below."""
    ours, theirs = (comparable(_run_log(og, marian)) for og in (engine, og_peer))
    unallocated = "\x1b[32mName: \x1b[0mlogits \x1b[1m\x1b[44m  model_output_values"
    assert unallocated in theirs
    shaped = ("\x1b[32mName: \x1b[0mlogits \x1b[32mShapeDims[ 2]\x1b[0m\x1b[32mShape[ \x1b[0m1 32 \x1b[32m]\x1b[0m"
              "\x1b[32m Type: \x1b[0mfloat32\x1b[32m Location: \x1b[0mCPU\r\n\x1b[1m\x1b[44m  model_output_values")
    assert ours == theirs.replace(unallocated, shaped)


def _edited(marian, tmp_path, edit) -> str:
    folder = build_marian(str(tmp_path / "edited"))
    with open(f"{folder}/genai_config.json", encoding="utf-8") as file:
        config = json.load(file)
    edit(config["model"])
    with open(f"{folder}/genai_config.json", "w", encoding="utf-8") as file:
        json.dump(config, file)
    return folder


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("edit, message", [
    (lambda model: model.pop("encoder"), r"missing required field 'model\.encoder'"),
    (lambda model: model["encoder"]["outputs"].update(encoder_outputs="hidden"),
     r"'model\.encoder\.outputs\.encoder_outputs' is 'hidden', but the graph has no output of that name"),
    (lambda model: model["decoder"]["inputs"].update(rnn_states_prev="state"),
     r"'model\.decoder\.inputs\.rnn_states_prev' is 'state', but the graph has no input of that name"),
    (lambda model: model["encoder"].update(filename="absent.onnx"), r"encoder file 'absent\.onnx'.* is missing"),
], ids=["no-encoder", "encoder-output-name", "state-input-name", "encoder-file"])
def test_a_folder_that_contradicts_its_graphs_is_refused_at_model(engine, marian, tmp_path, edit, message):
    with pytest.raises(ConfigError, match=message):
        engine.Model(_edited(marian, tmp_path, edit))

