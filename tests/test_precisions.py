"""The builder's other precisions and its mixture of experts on both engines (gentwin.fixtures.layouts.PRECISIONS,
built on demand), live against onnxruntime-genai 0.18.0 wherever it runs them:

- qwen2-tied-int4: the default int4 build of a model with tied embeddings (GatherBlockQuantized reading the LM
  head's MatMulNBits weight, then Slice), accuracy_level 4;
- gptoss-moe-fp32: gpt-oss's float MoE layer;
- mistral-mha-fp16 and mistral-mha-bf16: the CPU graphs of fp16 and bf16 builds (MultiHeadAttention,
  RotaryEmbedding and the builder's own mask subgraph), which take a prompt or one token at a time: the
  engines feed a chunk over a past token by token (gentwin.position_inputs.takes_chunks_over_past).

Where the peer fails (fp16: every append over a past, in the mask's Expand; bf16: onnxruntime has no bf16
`Where` kernel), its failure is pinned, gentwin.fast agrees with gentwin.reference or refuses bf16 at Model()
naming the kernel, and the reference is checked against independent expectations: a continued chat against a
fresh prefill of the same history, bf16 logits against the peer's on the fp32 model they round.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime_genai as og
import pytest

import gentwin.fast
import gentwin.reference
from gentwin.conformance.model_facts import FLOAT_RELATIVE_TOLERANCE, ModelFacts
from gentwin.conformance.scenarios import Scenario, greedy_battery, play
from gentwin.conformance.verdict import IDENTICAL, TIE, Side, judge
from gentwin.errors import GentwinError
from gentwin.reference.ops import matmul_nbits
from tests.conftest import ENGINE_IDS, ENGINES, FIXTURE_MODELS, _built_on_demand, load
from tests.test_generate_vs_peer import assert_plays_as_the_peer

by_engine = pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
SCENARIO_NAMES = ["batch1", "batch2-padded", "chat-3-turns", "rewind-reappend", "sampling", "beam"]
APPENDS_OVER_A_PAST = {"chat-3-turns", "rewind-reappend"}


@pytest.fixture(scope="session")
def precision_models(tmp_path_factory):
    return _built_on_demand(tmp_path_factory, "precisions")


def scenarios(path) -> dict[str, Scenario]:
    """The greedy battery, a seeded sampled stream and a beam search, by name."""
    config = load("gentwin.reference", str(path)).config
    greedy = greedy_battery(min(config.vocab_size, 1000), config.pad_token_id)
    prompt = greedy[0].prompt
    sampled = {"max_length": 20, "do_sample": True, "top_k": 20, "top_p": 0.9, "temperature": 0.8, "random_seed": 7}
    return {scenario.name: scenario for scenario in [
        *greedy,
        Scenario("sampling", prompt, (("finish",),), sampled),
        Scenario("beam", prompt, (("finish",),), {"max_length": 16, "num_beams": 3, "num_return_sequences": 2}),
    ]}


@functools.lru_cache(maxsize=None)
def half_tolerance(path) -> float:
    """How far two correct runs of a half-precision model may be apart, relative to the row's largest logit: the
    bound gentwin check derives (float32 rounding + twice what half precision does to the model's logits on the
    calibration prompts, measured against the model computed in float32)."""
    facts = ModelFacts.read(path)
    assert facts.half_precision and facts.calibrated_rounding > 0
    return FLOAT_RELATIVE_TOLERANCE + 2 * facts.calibrated_rounding


def logits_agree(ours, theirs, tolerance) -> bool:
    """Whether logits [..., vocab] lie within TOLERANCE of the row's largest logit (at least 1)."""
    scale = np.maximum(1.0, np.abs(theirs).max(axis=-1, keepdims=True))
    return bool((np.abs(np.asarray(ours) - theirs) / scale).max() <= tolerance)


def assert_same_play(ours, theirs, tolerance):
    """Two plays of a scenario: the same events, logits within TOLERANCE."""
    assert [event[:2] for event in ours] == [event[:2] for event in theirs]
    for mine, truth in zip(ours, theirs):
        if mine.kind == "logits":
            assert logits_agree(mine.value, truth.value, tolerance), mine.step
        else:
            assert mine.value == truth.value, (mine.step, mine.kind)


def assert_identical_or_tie(engine, path, scenario):
    """The peer plays SCENARIO as ENGINE does, or differs by a numerical tie: gentwin check's verdict, ENGINE the
    oracle."""
    facts = ModelFacts.read(path)
    verdict = judge(Side(og, load("onnxruntime_genai", str(path))), Side(engine, load(engine.__name__, str(path))),
                    scenario, facts)
    assert verdict.outcome in (IDENTICAL, TIE) and verdict.worst <= 1, verdict.detail


def peer_play(path, scenario):
    return play(og, load("onnxruntime_genai", str(path)), scenario, feed_pending_before_append=True)


def engine_play(engine, path, scenario):
    return play(engine, load(engine.__name__, str(path)), scenario)


# --- Tied int4 embeddings and MoE: every scenario against the peer --------------------------------------------


@by_engine
@pytest.mark.parametrize("name", ["qwen2-tied-int4", "gptoss-moe-fp32"])
@pytest.mark.parametrize("scenario_name", SCENARIO_NAMES)
def test_streams_match_the_peer(precision_models, engine, name, scenario_name):
    path = precision_models[name]
    assert_plays_as_the_peer(engine, path, scenarios(path)[scenario_name])


def test_the_tied_int4_model_is_laid_out_as_the_builder_writes_it(precision_models):
    """Reshape of the LM head's packed weight, GatherBlockQuantized, Slice back to the hidden size (48, not a whole
    number of 32-wide blocks); the LM head's MatMulNBits reads the same initializers; there is no float table."""
    proto = onnx.load(str(precision_models["qwen2-tied-int4"] / "model.onnx"), load_external_data=False)
    nodes = {node.op_type: node for node in proto.graph.node}
    reshape, gather, head = nodes["Reshape"], nodes["GatherBlockQuantized"], nodes["MatMulNBits"]
    assert reshape.input[0] == "lm_head.MatMul.weight_Q4" and gather.input[0] == reshape.output[0]
    assert list(gather.input[2:]) == ["lm_head.MatMul.weight_scales"]
    assert [node.op_type for node in proto.graph.node if gather.output[0] in node.input] == ["Slice"]
    lm_head = [node for node in proto.graph.node if "logits" in node.output]
    assert lm_head[0].input[1:] == ["lm_head.MatMul.weight_Q4", "lm_head.MatMul.weight_scales"]
    assert {a.name: onnx.helper.get_attribute_value(a) for a in gather.attribute} == {
        "bits": 4, "block_size": 32, "gather_axis": 0, "quantize_axis": 1}
    assert not any(tensor.name == "model.embed_tokens.weight" for tensor in proto.graph.initializer)


# --- fp16: the peer where it runs, the engines with each other where it cannot -----------------------------------


@by_engine
@pytest.mark.parametrize("scenario_name", sorted(set(SCENARIO_NAMES) - APPENDS_OVER_A_PAST))
def test_fp16_streams_match_the_peer(precision_models, engine, scenario_name):
    """gentwin.fast runs the peer's session: the same events. The reference rounds every operator's output to
    fp16 as ONNX defines it, where onnxruntime's CPU computes most of the graph in float32 (its optimizer casts
    the inputs of nodes it has no fp16 kernel for, "InsertedPrecisionFreeCast"): the same events, or a tie."""
    path = precision_models["mistral-mha-fp16"]
    scenario = scenarios(path)[scenario_name]
    if engine is gentwin.fast:
        assert_same_play(engine_play(engine, path, scenario), peer_play(path, scenario), 0.0)
    else:
        assert_identical_or_tie(engine, path, scenario)


@pytest.mark.parametrize("scenario_name", sorted(APPENDS_OVER_A_PAST))
def test_fp16_chats_and_rewinds_run_on_both_engines_alike_where_the_peer_fails(precision_models, scenario_name):
    path = precision_models["mistral-mha-fp16"]
    scenario = scenarios(path)[scenario_name]
    peer = peer_play(path, scenario)
    assert peer[-1].kind == "raised" and "Expand" in peer[-1].value  # the builder's mask takes no chunk over a past
    reference = engine_play(gentwin.reference, path, scenario)
    assert all(event.kind != "raised" for event in reference)
    assert_same_play(engine_play(gentwin.fast, path, scenario), reference, half_tolerance(path))


def continued_and_fresh(module, path, fresh_module):
    """(logits after a chat continued over its past, logits of a fresh prefill of the same history by
    FRESH_MODULE), the history being a prompt, 4 greedy tokens and 3 appended tokens."""
    model = load(module.__name__, str(path))
    params = module.GeneratorParams(model)
    params.set_search_options(max_length=32)
    generator = module.Generator(model, params)
    generator.append_tokens(np.array([[5, 17, 33, 41, 8]], dtype=np.int32))
    for _ in range(4):
        generator.generate_next_token()
    generator.append_tokens(np.array([[9, 12, 14]], dtype=np.int32))
    history = np.array(generator.get_sequence(0), dtype=np.int32)[None]
    fresh_model = load(fresh_module.__name__, str(path))
    fresh_params = fresh_module.GeneratorParams(fresh_model)
    fresh_params.set_search_options(max_length=32)
    fresh = fresh_module.Generator(fresh_model, fresh_params)
    fresh.append_tokens(history)
    return np.asarray(generator.get_logits())[0, -1], np.asarray(fresh.get_logits())[0, -1]


@by_engine
def test_an_fp16_chat_continued_token_by_token_equals_the_peers_fresh_prefill(precision_models, engine):
    path = precision_models["mistral-mha-fp16"]
    continued, fresh = continued_and_fresh(engine, path, og)
    assert np.abs(continued - fresh).max() <= half_tolerance(path) * max(1.0, np.abs(fresh).max())
    assert continued.argmax() == fresh.argmax()


# --- bf16: the peer and onnxruntime lack a kernel; the reference runs it ----------------------------------------


def test_bf16_is_refused_by_the_peer_and_by_gentwin_fast_naming_the_missing_kernel(precision_models):
    path = str(precision_models["mistral-mha-bf16"])
    with pytest.raises(RuntimeError, match=r"Could not find an implementation for Where\(16\)"):
        og.Model(path)
    with pytest.raises(GentwinError, match=r"in onnxruntime: .*Could not find an implementation for Where\(16\)"):
        gentwin.fast.Model(path)


@pytest.mark.parametrize("scenario_name", SCENARIO_NAMES)
def test_bf16_plays_every_scenario_on_the_reference(precision_models, scenario_name):
    path = precision_models["mistral-mha-bf16"]
    events = engine_play(gentwin.reference, path, scenarios(path)[scenario_name])
    assert [event for event in events if event.kind == "raised"] == []
    assert events[-1].kind == "returned"


def test_bf16_logits_follow_the_peers_on_the_fp32_model_they_round(precision_models):
    """mistral-mha-bf16 holds mistral-mha-fp32's weights rounded to bfloat16: fed the same tokens one by one, the
    reference's logits stay within bf16's tolerance of the peer's on the fp32 model."""
    tokens = [5, 17, 33, 41, 8, 99, 120, 7]
    rows = {}
    for module, path in ((gentwin.reference, precision_models["mistral-mha-bf16"]),
                         (og, FIXTURE_MODELS / "mistral-mha-fp32")):
        model = load(module.__name__, str(path))
        params = module.GeneratorParams(model)
        params.set_search_options(max_length=32)
        generator = module.Generator(model, params)
        rows[module.__name__] = []
        for token in tokens:
            generator.append_tokens(np.array([[token]], dtype=np.int32))
            rows[module.__name__].append(np.asarray(generator.get_logits())[0, -1])
    ours, theirs = np.array(rows["gentwin.reference"]), np.array(rows["onnxruntime_genai"])
    scale = np.maximum(1.0, np.abs(theirs).max(axis=-1, keepdims=True))
    assert (np.abs(ours - theirs) / scale).max() <= half_tolerance(precision_models["mistral-mha-bf16"])
    assert (ours.argmax(axis=-1) == theirs.argmax(axis=-1)).mean() >= 0.75  # a tie may flip where bf16 rounds


def test_a_bf16_chat_continued_token_by_token_equals_a_fresh_prefill(precision_models):
    path = precision_models["mistral-mha-bf16"]
    continued, fresh = continued_and_fresh(gentwin.reference, path, gentwin.reference)
    assert np.abs(continued - fresh).max() <= half_tolerance(path) * max(1.0, np.abs(fresh).max())
    assert continued.argmax() == fresh.argmax()


# --- The reference's memory: mapped weights, MatMulNBits weights kept packed ---------------------------------


PROMPT = [5, 17, 33, 41, 8, 99, 12, 7, 64, 3]


def prompt_logits(path, prompt=PROMPT) -> np.ndarray:
    """The logits of every position of a prompt, on a Model of its own (not the session's shared one)."""
    model = gentwin.reference.Model(str(path))
    params = gentwin.reference.GeneratorParams(model)
    params.set_search_options(max_length=16)
    generator = gentwin.reference.Generator(model, params)
    generator.append_tokens(np.array([prompt], dtype=np.int32))
    return np.array(generator.get_output("logits"))


def test_matmul_nbits_keeps_its_weights_packed(precision_models):
    """After a prompt and a token, each MatMulNBits kernel holds its B once more, prepacked, in as many bytes
    as the file has: no float32 copy of the weights is kept."""
    model = gentwin.reference.Model(str(precision_models["qwen2-tied-int4"]))
    generator = gentwin.reference.Generator(model, gentwin.reference.GeneratorParams(model))
    generator.append_tokens(np.array([PROMPT], dtype=np.int32))
    generator.generate_next_token()
    runner = model.graph.runner
    kernels = [step for step in runner.steps if step.kernel.op_type == "MatMulNBits"]
    assert kernels
    for step in kernels:
        weight, prepacked = step.kernel._prepacked
        assert weight is runner.constants[step.inputs[1]]
        assert prepacked.dtype == np.uint8 and prepacked.nbytes == weight.nbytes


def test_few_rows_summed_block_by_block_match_the_dequantized_product_to_float_rounding(precision_models, monkeypatch):
    """A token or a few (at most BLOCK_SUM_ROWS rows) are multiplied without dequantizing the weights: the
    same sum as a prompt's dequantized product, rounded otherwise."""
    path = precision_models["qwen2-tied-int4"]
    monkeypatch.setattr(matmul_nbits, "BLOCK_SUM_ROWS", 0)
    dequantized = prompt_logits(path)
    monkeypatch.setattr(matmul_nbits, "BLOCK_SUM_ROWS", len(PROMPT))
    block_sums = prompt_logits(path)
    assert not np.array_equal(block_sums, dequantized)  # the other way was taken
    np.testing.assert_allclose(block_sums, dequantized, rtol=0, atol=1e-5 * np.abs(dequantized).max())


def test_slicing_the_output_columns_changes_no_more_than_float_rounding(precision_models, monkeypatch):
    path = precision_models["qwen2-tied-int4"]
    whole = prompt_logits(path)
    monkeypatch.setattr(matmul_nbits, "SLICE_BYTES", 4 * 48 * 7)
    sliced = prompt_logits(path)
    np.testing.assert_allclose(sliced, whole, rtol=0, atol=1e-5 * np.abs(whole).max())


def test_external_weights_are_mapped_from_their_file_not_copied(precision_models):
    path = precision_models["gptoss-moe-fp32"]
    weights = load("gentwin.reference", str(path)).graph.weights
    data_file = str(path / "model.onnx.data")
    mapped = [name for name, array in weights.items() if isinstance(array, np.memmap) and array.filename == data_file]
    assert mapped and len(mapped) >= len(weights) - 1  # all but a tensor whose offset breaks alignment, if any
    assert all(not array.flags.writeable for array in weights.values() if isinstance(array, np.memmap))


def test_a_data_file_shorter_than_a_weight_is_refused_at_load_naming_it(precision_models, tmp_path):
    import shutil

    folder = tmp_path / "short"
    shutil.copytree(precision_models["qwen2-tied-int4"], folder)
    data = folder / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(GentwinError, match=r"model\.onnx\.data ends before the \d+ bytes of '[^']+' at offset"):
        gentwin.reference.Model(str(folder))
