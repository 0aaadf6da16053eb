"""The text decoders of vision-language checkpoints, run on text alone, and windows the attention op does not
keep, on both engines live against onnxruntime-genai 0.18.0:

- qwen2.5-vl-text-fp32 (gentwin.fixtures.layouts.MULTIMODAL_TEXT): genai_config type qwen2_5_vl_text,
  position_ids [3, batch, sequence] for MRotaryEmbedding, filled as the peer fills them for text;
- the committed llama-fp32 as the builder writes mistral3_text: a sliding window of 4096 over every layer,
  wider than the context, while GroupQueryAttention keeps no window;
- lfm2-conv-fp32 (LAYER_KINDS) as lfm2_vl_text: lfm2's conv layers;
- the committed mistral-mha-fp32 with the sliding window the builder keeps in genai_config.json for its fp16
  gpt-oss: MultiHeadAttention without a window, past and present not shared, so the peer feeds a growing past
  (and allocates the windowed layer's present for the window and its slack only: it fails past them, where
  gentwin runs on).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
import pytest

import gentwin.fast
import gentwin.reference
from gentwin.config import ConfigError
from gentwin.errors import GentwinError
from tests.conftest import ENGINE_IDS, ENGINES, FIXTURE_MODELS, load
from tests.helpers import finished_sequences, new_generator

by_engine = pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
PROMPT = [5, 17, 42, 9, 300, 7]
SECOND_ROW = [12, 400, 33]  # padded on the right to PROMPT's length
GPT_OSS_WINDOW = {"window_size": 4, "slide_key_value_cache": False, "slide_inputs": False, "layers": [0],
                  "cache_slack": 0}
GPT_OSS_WINDOW_SLOTS = 4 + 16  # the window and the peer's slack on the CPU


def relabelled(source: Path, folder: Path, model_type: str, sliding_window: dict | None = None) -> str:
    """A copy of SOURCE whose genai_config.json says MODEL_TYPE (and SLIDING_WINDOW), as the builder writes it."""
    shutil.copytree(source, folder)
    path = folder / "genai_config.json"
    config = json.loads(path.read_text())
    config["model"]["type"] = model_type
    if sliding_window:
        config["model"]["decoder"]["sliding_window"] = sliding_window
    path.write_text(json.dumps(config, indent=4))
    return str(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from gentwin.fixtures.build import build

    root = tmp_path_factory.mktemp("multimodal_text")
    lfm2 = build(str(root / "built"), ["lfm2-conv-fp32"], size="layer_kinds")[0]
    return {
        "qwen2_5_vl_text": build(str(root / "built"), size="multimodal_text")[0],
        "mistral3_text": relabelled(FIXTURE_MODELS / "llama-fp32", root / "mistral3", "mistral3_text",
                                    dict(GPT_OSS_WINDOW, window_size=4096, layers=[])),
        "lfm2_vl_text": relabelled(Path(lfm2), root / "lfm2-vl", "lfm2_vl_text"),
        "gptoss-mha": relabelled(FIXTURE_MODELS / "mistral-mha-fp32", root / "gptoss-mha", "gptoss", GPT_OSS_WINDOW),
    }


def generator(module, folder, prompt=(PROMPT,), **options):
    return new_generator(module, folder, prompt, **{"max_length": 32, **options})


finish = finished_sequences


def pad_id(folder) -> int:
    return load("gentwin.reference", folder).config.pad_token_id


def prompts(folder) -> dict:
    pad = pad_id(folder)
    return {"single": [PROMPT], "padded": [PROMPT, SECOND_ROW + [pad] * (len(PROMPT) - len(SECOND_ROW))],
            "inner-pad": [[5, 17, pad, 9, 300, 7]]}


TYPES = ["qwen2_5_vl_text", "mistral3_text", "lfm2_vl_text"]


@by_engine
@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("prompt", ["single", "padded", "inner-pad"])
@pytest.mark.parametrize("options", [{}, {"do_sample": True, "top_k": 20, "random_seed": 7}], ids=["greedy", "sampled"])
def test_streams_match_the_peer(engine, models, name, prompt, options):
    """A pad token inside a batch-1 prompt is masked out by the Qwen-VL family's rules, not by the others'."""
    tokens = prompts(models[name])[prompt]
    expected, ours = generator(og, models[name], tokens, **options), generator(engine, models[name], tokens, **options)
    np.testing.assert_allclose(ours.get_logits(), expected.get_logits(), rtol=0, atol=5e-5)
    assert finish(ours, len(tokens)) == finish(expected, len(tokens))


@by_engine
@pytest.mark.parametrize("name", TYPES)
def test_chat_continuation_and_rewind_match_the_peer(engine, models, name):
    """A second turn over the past (the positions run on from it), then back to 8 tokens and another append
    (the peer is made to run its last generated token first: README, Differences 1). lfm2's conv layers
    refuse every rewind, as the peer's."""
    streams = []
    for module in (og, engine):
        gen = generator(module, models[name])
        finish(gen, count=5)
        if module is og:
            gen.get_logits()
        gen.append_tokens(np.array([[61, 62, 63, 64]], dtype=np.int32))
        finish(gen, count=6)
        if name != "lfm2_vl_text":
            gen.rewind_to(8)
            gen.append_tokens(np.array([[70, 71]], dtype=np.int32))
        streams.append(finish(gen))
    assert streams[1] == streams[0]


@by_engine
@pytest.mark.parametrize("name", ["mistral3_text", "lfm2_vl_text"])
def test_beams_match_the_peer(engine, models, name):
    options = {"num_beams": 3, "num_return_sequences": 2}
    assert finish(generator(engine, models[name], **options), 2) == finish(generator(og, models[name], **options), 2)


def test_beams_on_multimodal_rotary_where_the_peer_fails_agree_on_both_engines(models):
    """The peer expands the [3, batch, sequence] positions by the beams twice ("Got invalid dimensions for
    input: position_ids"); both engines run the beams, alike."""
    options = {"num_beams": 3, "num_return_sequences": 2}
    with pytest.raises(RuntimeError, match="invalid dimensions for input: position_ids"):
        finish(generator(og, models["qwen2_5_vl_text"], **options), 2)
    streams = [finish(generator(engine, models["qwen2_5_vl_text"], **options), 2) for engine in ENGINES]
    assert streams[0] == streams[1]


@by_engine
@pytest.mark.parametrize("options", [{}, {"num_beams": 3, "num_return_sequences": 2}, {"batch": "padded"}],
                         ids=["greedy", "beams", "padded"])
def test_a_window_the_attention_op_does_not_keep_grows_as_in_the_peer(engine, models, options):
    """Within the window and its slack (20 positions), as the peer: every scenario it plays, a growing past."""
    folder, options = models["gptoss-mha"], dict(options)
    tokens = prompts(folder)[options.pop("batch", "single")]
    rows = options.get("num_return_sequences", len(tokens))
    max_length = 32 if "num_beams" in options else GPT_OSS_WINDOW_SLOTS
    expected = generator(og, folder, tokens, max_length=max_length, **options)
    ours = generator(engine, folder, tokens, max_length=max_length, **options)
    assert finish(ours, rows) == finish(expected, rows)


def test_past_the_window_where_the_peer_fails_both_engines_run_on_alike(models):
    """The peer allocates the windowed layer's present for 20 positions and fails the run that writes the 21st;
    the graph's attention keeps no window, so gentwin feeds it the whole past, on both engines alike."""
    folder = models["gptoss-mha"]
    with pytest.raises(RuntimeError, match="present.0.key"):
        finish(generator(og, folder))
    streams = [finish(generator(engine, folder)) for engine in (gentwin.reference, gentwin.fast)]
    assert streams[0] == streams[1] and len(streams[0][0]) == 32
    assert streams[0][0][:GPT_OSS_WINDOW_SLOTS] == finish(generator(og, folder, max_length=GPT_OSS_WINDOW_SLOTS))[0]


@by_engine
def test_a_row_of_pads_alone_is_refused_before_anything_changes(engine, models):
    folder = models["qwen2_5_vl_text"]
    pad = pad_id(folder)
    model = load(engine.__name__, folder)
    params = engine.GeneratorParams(model)
    params.set_search_options(batch_size=2, max_length=32)
    ours = engine.Generator(model, params)
    with pytest.raises(GentwinError, match=f"row 1 of input_ids holds only pad tokens \\({pad}\\)"):
        ours.append_tokens(np.array([PROMPT, [pad] * len(PROMPT)], dtype=np.int32))
    assert ours.token_count() == 0
    tokens = prompts(folder)["padded"]
    ours.append_tokens(np.array(tokens, dtype=np.int32))
    assert finish(ours, 2) == finish(generator(og, folder, tokens), 2)


@by_engine
def test_a_padded_row_after_rewind_to_zero_is_refused_as_the_peer_fails(engine, models):
    """rewind_to(0) keeps each row's rope delta, as the peer's does: a row padded by 2 in the first prompt
    would start the next at position -2, which the peer's MRotaryEmbedding refuses; gentwin refuses it first."""
    folder = models["qwen2_5_vl_text"]
    first, second = prompts(folder)["padded"], [PROMPT, [3, 4, 5, 6, 7, 8]]
    for module, error, message in ((og, RuntimeError, "position_ids value -3"),
                                   (engine, GentwinError, r"row 1 would start at position -3")):
        gen = generator(module, folder, first)
        finish(gen, 2, count=2)
        gen.rewind_to(0)
        with pytest.raises(error, match=message):
            gen.append_tokens(np.array(second, dtype=np.int32))
            finish(gen, 2)
    assert gen.token_count() == 0


@by_engine
def test_a_head_size_the_graph_contradicts_is_refused_at_load(engine, models, tmp_path):
    """The query's width is read through MRotaryEmbedding, back to its projection."""
    folder = tmp_path / "wrong-head-size"
    shutil.copytree(models["qwen2_5_vl_text"], folder)
    config = json.loads((folder / "genai_config.json").read_text())
    config["model"]["decoder"]["head_size"] = 8
    (folder / "genai_config.json").write_text(json.dumps(config))
    message = ("'model.decoder.head_size' is 8, but the graph's GroupQueryAttention node "
               "'/model/layers.0/attn/GroupQueryAttention' takes 4 heads in a query 64 wide")
    with pytest.raises(ConfigError, match=message):
        engine.Model(str(folder))
