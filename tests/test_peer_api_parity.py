"""What onnxruntime-genai's own API tests exercise, on both engines, live against the peer: a model loaded
from memory (Config.add_model_data), the inputs the peer feeds itself (num_logits_to_keep), the run log
(set_log_options, set_log_callback) and the checks of a genai_config.json `draft` section."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime_genai as peer
import pytest

from tests.conftest import ENGINE_IDS, ENGINES, FIXTURE_MODELS

GPT2 = FIXTURE_MODELS / "gpt2-fp32"    # weights inside model.onnx
LLAMA = FIXTURE_MODELS / "llama-fp32"  # weights in model.onnx.data beside it
PROMPT = [[5, 17, 3, 9]]


@pytest.fixture(params=ENGINES, ids=ENGINE_IDS)
def engine(request):
    return request.param


def generated_tokens(og, model, prompt=PROMPT, max_length=10, num_beams=1) -> list[int]:
    """The sequences OG generates on MODEL after PROMPT, greedy (or with NUM_BEAMS beams)."""
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max_length, batch_size=len(prompt), num_beams=num_beams)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(prompt, dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    return [generator.get_sequence(row).tolist() for row in range(len(prompt))]


def raised(call) -> str:
    with pytest.raises(RuntimeError) as error:
        call()
    return str(error.value)


# -- Config.add_model_data ----------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [GPT2, LLAMA], ids=["embedded-weights", "external-data"])
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, lambda data: np.frombuffer(data, np.uint8)],
                         ids=["bytes", "bytearray", "memoryview", "uint8-array"])
def test_a_model_from_memory_generates_what_the_peer_does(engine, folder, wrap, tmp_path):
    """The model file's bytes replace the file, which need not exist; external data is read from the folder."""
    copy = shutil.copytree(folder, tmp_path / "model")
    data = wrap((copy / "model.onnx").read_bytes())
    (copy / "model.onnx").unlink()
    results = []
    for og in (engine, peer):
        config = og.Config(str(copy))
        config.add_model_data("model.onnx", data)
        model = og.Model(config)
        config.remove_model_data("model.onnx")  # the Model has read it
        results.append(generated_tokens(og, model))
    assert results[0] == results[1]


def test_model_data_refusals_are_the_peers(engine):
    """Each refusal carries the peer's words, and leaves the Config as it was."""
    data = (GPT2 / "model.onnx").read_bytes()
    ours, theirs = engine.Config(str(GPT2)), peer.Config(str(GPT2))
    cases = [
        ("add_model_data", ("model.onnx", b"")), ("add_model_data", ("model.onnx", "text")),
        ("add_model_data", ("model.onnx", np.zeros(4, np.float32))),
        ("add_model_data", ("model.onnx", np.zeros((2, 2), np.uint8))),
        ("remove_model_data", ("model.onnx",)),
    ]
    for method, arguments in cases:
        assert raised(lambda: getattr(theirs, method)(*arguments)) in raised(lambda: getattr(ours, method)(*arguments))
    for config in (ours, theirs):
        config.add_model_data("model.onnx", data)
    duplicate = raised(lambda: theirs.add_model_data("model.onnx", data))
    assert duplicate in raised(lambda: ours.add_model_data("model.onnx", data))
    for config in (ours, theirs):
        config.remove_model_data("model.onnx")
    gone = raised(lambda: theirs.remove_model_data("model.onnx"))
    assert gone in raised(lambda: ours.remove_model_data("model.onnx"))


def test_model_data_under_another_name_is_not_read(engine, tmp_path):
    """Only the decoder's file name counts: bytes given under another name leave the folder's file in use,
    and a folder without the file fails at Model(), as in the peer, not at Config()."""
    copy = shutil.copytree(GPT2, tmp_path / "model")
    for og in (engine, peer):
        config = og.Config(str(copy))
        config.add_model_data("other.onnx", b"not a model")
        assert generated_tokens(og, og.Model(config)) == generated_tokens(peer, peer.Model(str(GPT2)))
    (copy / "model.onnx").unlink()
    config = engine.Config(str(copy))
    with pytest.raises(RuntimeError, match="'model.onnx' named in genai_config.json is missing"):
        engine.Model(config)


def test_model_data_that_is_no_model_is_refused_at_load(engine):
    for og in (engine, peer):
        config = og.Config(str(GPT2))
        config.add_model_data("model.onnx", b"\x00garbage" * 10)
        with pytest.raises(RuntimeError, match="(?i)pars"):  # both say the protobuf could not be parsed
            og.Model(config)


def test_the_config_keeps_the_data_alive(engine):
    """The peer keeps only a pointer to the bytes (a temporary passed in may be gone by Model()); gentwin keeps
    a reference, so a temporary works."""
    config = engine.Config(str(GPT2))
    config.add_model_data("model.onnx", bytearray((GPT2 / "model.onnx").read_bytes()))
    assert generated_tokens(engine, engine.Model(config)) == generated_tokens(peer, peer.Model(str(GPT2)))


# -- inputs the peer feeds itself -----------------------------------------------------------------------


def with_extra_input(folder, target, name: str, dtype=onnx.TensorProto.INT64):
    """A copy of FOLDER whose graph takes one more input, NAME (a scalar), added to its logits: the peer's
    test_preset_extra_inputs model."""
    shutil.copytree(folder, target)
    model = onnx.load(target / "model.onnx")
    for node in model.graph.node:
        if node.output[0] == "logits":
            node.output[0] = "logits_before"
    model.graph.input.append(onnx.helper.make_tensor_value_info(name, dtype, []))
    model.graph.node.extend([
        onnx.helper.make_node("Cast", [name], ["extra_as_float"], to=onnx.TensorProto.FLOAT),
        onnx.helper.make_node("Add", ["extra_as_float", "logits_before"], ["logits"]),
    ])
    (target / "model.onnx").unlink()
    (target / "model.onnx.data").unlink()
    onnx.save(model, target / "model.onnx", save_as_external_data=True, location="model.onnx.data")
    return target


@pytest.mark.parametrize("name", ["num_logits_to_keep", "onnx::Neg_67"])
def test_preset_inputs_are_fed_as_the_peer_feeds_them(engine, name, tmp_path):
    folder = str(with_extra_input(LLAMA, tmp_path / "model", name))
    prompt = [[5, 17, 3, 9], [2, 8, 8, 4]]
    ours, theirs = engine.Model(folder), peer.Model(folder)
    assert generated_tokens(engine, ours, prompt) == generated_tokens(peer, theirs, prompt)
    generators = []
    for og, model in ((engine, ours), (peer, theirs)):
        generator = og.Generator(model, og.GeneratorParams(model))
        generator.append_tokens(np.array(PROMPT, dtype=np.int32))
        generators.append(generator)
    fed = [generator.get_input(name) for generator in generators]
    np.testing.assert_array_equal(fed[0], fed[1])
    assert fed[0].dtype == fed[1].dtype


def test_a_value_set_for_a_preset_input_replaces_the_preset(engine, tmp_path):
    folder = str(with_extra_input(LLAMA, tmp_path / "model", "num_logits_to_keep"))
    logits = []
    for og in (engine, peer):
        model = og.Model(folder)
        generator = og.Generator(model, og.GeneratorParams(model))
        generator.set_model_input("num_logits_to_keep", np.array(3, dtype=np.int64))
        generator.append_tokens(np.array(PROMPT, dtype=np.int32))
        logits.append(generator.get_logits())
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-4)


@pytest.mark.parametrize("name", ["abcde", "num_logits_to_keep_too"])
def test_an_input_nobody_feeds_is_missing_in_the_peers_words(engine, name, tmp_path):
    folder = str(with_extra_input(LLAMA, tmp_path / "model", name))
    messages = []
    for og in (engine, peer):
        model = og.Model(folder)
        generator = og.Generator(model, og.GeneratorParams(model))
        messages.append(raised(lambda: generator.append_tokens(np.array(PROMPT, dtype=np.int32))))
    assert f"Missing Input: {name}" in messages[1]
    assert messages[0].startswith(f"Missing Input: {name}")


def test_a_preset_input_of_another_type_is_refused_as_by_the_peer(engine, tmp_path):
    folder = str(with_extra_input(LLAMA, tmp_path / "model", "num_logits_to_keep", onnx.TensorProto.INT32))
    messages = []
    for og in (engine, peer):
        model = og.Model(folder)
        generator = og.Generator(model, og.GeneratorParams(model))
        messages.append(raised(lambda: generator.append_tokens(np.array(PROMPT, dtype=np.int32))))
    assert messages[1] in messages[0]


# -- the run log ----------------------------------------------------------------------------------------

EVERY_ENTRY = dict(generate_next_token=True, append_next_tokens=True, hit_eos=True, hit_max_length=True,
                   model_input_values=True, model_output_shapes=True, model_output_values=True, model_logits=True)


@pytest.fixture
def run_log(engine):
    """The log options of ENGINE and the peer, set back to the peer's defaults afterwards (they are global)."""
    yield
    for og in (engine, peer):
        og.set_log_callback(None)
        og.set_log_options(enabled=False, filename="", ansi_tags=True, warning=True, value_stats=True,
                           **{name: False for name in EVERY_ENTRY})


def comparable(log: str) -> str:
    """LOG with the digits of float values and their statistics masked: two engines' floats may differ in
    their last digits (and so in which of two near-equal values is the minimum), everything else may not."""
    lines, floats = [], False
    for line in log.split("\n"):
        if "Type: " in line:
            floats = "float" in line
        if "value_stats" in line or "model_logits" in line or ("Values[" in line and floats):
            line = re.sub(r"-?\d+(\.\d+)?(e[-+]\d+)?|-?inf|-?nan", "#", line)
        lines.append(line)
    return "\n".join(lines)


def logged_run(og, folder, prompt=((0, 0, 0, 52),), max_length=7, num_beams=1, **options) -> list[str]:
    """What OG's run log passes to a callback over a run on FOLDER with log OPTIONS."""
    lines = []
    og.set_log_callback(lines.append)
    logged_greedy_run(og, folder, prompt, max_length, num_beams, **options)
    og.set_log_callback(None)
    return lines


def logged_greedy_run(og, folder, prompt=((0, 0, 0, 52),), max_length=7, num_beams=1, **options) -> None:
    """A greedy run (or a beam search) on FOLDER with log OPTIONS, logged wherever OG's log goes now."""
    og.set_log_options(**{"enabled": True, **options})
    generated_tokens(og, og.Model(str(folder)), [list(row) for row in prompt], max_length, num_beams)
    og.set_log_options(enabled=False)


def test_log_callback_gets_the_peers_generate_next_token_entries(engine, run_log):
    """The peer's test_log_callback, and what the callback gets: one call per line."""
    ours, theirs = (logged_run(og, GPT2, generate_next_token=True) for og in (engine, peer))
    assert ours == theirs
    assert ours[0].startswith("\x1b[1m\x1b[44m  generate_next_token  \x1b[0m \x1b[32mdo_sample: ")


@pytest.mark.parametrize("folder, prompt, num_beams", [
    (GPT2, [[0, 0, 0, 52]], 1), (LLAMA, [[0, 0, 0, 52], [7, 9, 0, 0]], 1), (LLAMA, [[5, 17, 3], [8, 9, 0]], 2),
], ids=["gpt2", "llama-batch-2", "llama-beams"])
def test_every_entry_is_the_peers(engine, run_log, folder, prompt, num_beams):
    """Every kind of entry, with and without ANSI tags: the same lines as the peer's, floats aside."""
    for ansi_tags in (True, False):
        ours, theirs = (logged_run(og, folder, prompt=prompt, num_beams=num_beams, ansi_tags=ansi_tags, **EVERY_ENTRY)
                        for og in (engine, peer))
        assert comparable("".join(ours)) == comparable("".join(theirs))


def test_hit_eos_is_logged_as_by_the_peer(engine, run_log, tmp_path):
    """A row that generates EOS: the copy's EOS is the token the model generates first."""
    copy = shutil.copytree(GPT2, tmp_path / "model")
    first = generated_tokens(peer, peer.Model(str(GPT2)), [[0, 0, 0, 52]], 5)[0][4]
    config = json.loads((copy / "genai_config.json").read_text())
    config["model"]["eos_token_id"] = first
    (copy / "genai_config.json").write_text(json.dumps(config))
    ours, theirs = (logged_run(og, copy, ansi_tags=False, hit_eos=True, hit_max_length=True) for og in (engine, peer))
    assert ours == theirs == ["  hit_eos   EOS seen on batch 0\n"]


def test_a_warning_is_logged_as_by_the_peer(engine, run_log):
    """The peer's one warning a CPU run can give: a shared buffer asked for with beam search."""
    logs = []
    for og in (engine, peer):
        lines = []
        og.set_log_callback(lines.append)
        og.set_log_options(enabled=True, ansi_tags=False)
        model = og.Model(str(LLAMA))
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=8, num_beams=2, past_present_share_buffer=True)
        og.Generator(model, params).append_tokens(np.array(PROMPT, dtype=np.int32))
        logs.append(lines)
    assert logs[0] == logs[1]
    assert logs[0][0].startswith("  warning   past_present_share_buffer search option set to true")


def test_log_filename_replaces_the_callback(engine, run_log, tmp_path):
    """The peer's test_log_filename: a file named after a callback is set takes the entries; the callback
    gets none. The files hold what the peer's holds."""
    contents = []
    for og, name in ((engine, "ours.txt"), (peer, "theirs.txt")):
        called = []
        og.set_log_callback(called.append)
        og.set_log_options(filename=str(tmp_path / name))
        logged_greedy_run(og, GPT2, generate_next_token=True, append_next_tokens=True)
        og.set_log_options(filename=str(tmp_path / "other.txt"))  # closes the first file
        assert (tmp_path / name).stat().st_size > 0
        assert called == []
        contents.append((tmp_path / name).read_text())
    assert contents[0] == contents[1]


def test_the_log_goes_to_stderr_unless_told_otherwise(engine, run_log, capfd):
    """No file, no callback: stderr (the peer's std::cerr, file descriptor 2)."""
    written = []
    for og in (engine, peer):
        logged_greedy_run(og, GPT2, max_length=6, ansi_tags=False, hit_max_length=True)
        written.append(capfd.readouterr().err)
    assert written[0] == written[1] == "  hit_max_length   greedy cpu hit\n"


def test_nothing_is_logged_unless_enabled(engine, run_log):
    assert logged_run(engine, GPT2, enabled=False, **EVERY_ENTRY) == logged_run(peer, GPT2, enabled=False) == []


# -- a draft model (speculative decoding) -----------------------------------------------------------------


def with_draft(folder, target, change=lambda model: None):
    """A copy of FOLDER whose genai_config.json names its own decoder as a draft, then CHANGE(config['model'])."""
    shutil.copytree(folder, target)
    config = json.loads((target / "genai_config.json").read_text())
    config["model"]["draft"] = json.loads(json.dumps(config["model"]["decoder"]))
    change(config["model"])
    (target / "genai_config.json").write_text(json.dumps(config))
    return str(target)


def set_in(section: str, key: str, value):
    return lambda model: model[section].__setitem__(key, value)


def small_vocabulary_draft(folder):
    """The draft's model file: the target's graph with its logits cut to the first 7 tokens."""
    model = onnx.load(folder / "model.onnx", load_external_data=False)
    for node in model.graph.node:
        node.output[:] = ["logits_full" if name == "logits" else name for name in node.output]
    model.graph.initializer.extend(onnx.numpy_helper.from_array(np.array([value], np.int64), name)
                                   for name, value in (("cut_start", 0), ("cut_end", 7), ("cut_axis", 2)))
    model.graph.node.append(onnx.helper.make_node("Slice", ["logits_full", "cut_start", "cut_end", "cut_axis"],
                                                  ["logits"]))
    logits = next(value for value in model.graph.output if value.name == "logits")
    logits.type.tensor_type.shape.dim[-1].dim_value = 7
    onnx.save(model, folder / "draft.onnx")


DRAFT_REFUSALS = {
    "no filename": lambda model: model["draft"].pop("filename"),
    "empty filename": set_in("draft", "filename", ""),
    "another provider": set_in("draft", "session_options", {"provider_options": [{"cuda": {}}]}),
    "a sliding cache": set_in("draft", "sliding_window", {"window_size": 4}),
    "lfm2 layers": set_in("draft", "layer_types", ["full_attention", "full_attention"]),
    "a pipeline": set_in("draft", "pipeline", [{"part": {"filename": "model.onnx"}}]),
}


@pytest.mark.parametrize("change", DRAFT_REFUSALS.values(), ids=DRAFT_REFUSALS.keys())
def test_a_draft_the_peer_refuses_is_refused_in_its_words(engine, change, tmp_path):
    folder = with_draft(LLAMA, tmp_path / "model", change)
    assert raised(lambda: peer.Model(folder)) in raised(lambda: engine.Model(folder))


def test_a_draft_of_another_vocabulary_is_refused_in_the_peers_words(engine, tmp_path):
    folder = with_draft(LLAMA, tmp_path / "model", set_in("draft", "filename", "draft.onnx"))
    small_vocabulary_draft(tmp_path / "model")
    message = raised(lambda: peer.Model(folder))
    assert message.startswith("Target and draft logit dimensions don't match. Target vocab: 1024, Draft vocab: 7")
    assert message in raised(lambda: engine.Model(folder))


@pytest.mark.parametrize("options", [{"batch_size": 2}, {"num_beams": 2}, {"no_repeat_ngram_size": 2}],
                         ids=["batch", "beams", "no-repeat-ngrams"])
def test_search_options_speculative_decoding_refuses_are_refused_in_the_peers_words(engine, options, tmp_path):
    folder = with_draft(LLAMA, tmp_path / "model")
    messages = []
    for og in (engine, peer):
        model = og.Model(folder)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=10, **options)
        messages.append(raised(lambda: og.Generator(model, params)))
    assert messages[0] == messages[1]


def test_a_draft_the_peer_takes_decodes_the_peers_tokens(engine, tmp_path):
    folder = with_draft(LLAMA, tmp_path / "model")
    assert generated_tokens(engine, engine.Model(folder)) == generated_tokens(peer, peer.Model(folder))


# -- the peer's n-gram test models: no KV cache, logits maybe pruned to the last position ---------------


def cacheless_model(folder, prune_logits: bool) -> str:
    """The peer's tiny n-gram model (test_n_gram_decoding.py): no layers, no KV cache; the logits are a row
    of a table chosen by the token, every position's or (PRUNE_LOGITS) the last position's only, [B, 1, V]."""
    table = np.full((10, 10), -20.0, dtype=np.float32)      # token t is followed by (t + 1) % 9, 1 by 2
    table[np.arange(10), (np.arange(10) + 1) % 9] = 20.0
    table[1, :], table[1, 2] = -20.0, 20.0
    inputs = [onnx.helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT32, ["batch", "sequence"]),
              onnx.helper.make_tensor_value_info("attention_mask", onnx.TensorProto.INT32, ["batch", "total"])]
    logits = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT,
                                                ["batch", 1 if prune_logits else "sequence", 10])
    nodes = [onnx.helper.make_node("Gather", ["table", "input_ids"], ["every_position"], axis=0)]
    initializers = [onnx.numpy_helper.from_array(table, "table")]
    if prune_logits:
        initializers.append(onnx.numpy_helper.from_array(np.array([-1], np.int64), "last"))
        nodes.append(onnx.helper.make_node("Gather", ["every_position", "last"], ["logits"], axis=1))
    else:
        nodes.append(onnx.helper.make_node("Identity", ["every_position"], ["logits"]))
    graph = onnx.helper.make_graph(nodes, "cacheless", inputs, [logits], initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 10
    folder.mkdir()
    onnx.save(model, folder / "model.onnx")
    decoder = {"filename": "model.onnx", "head_size": 1, "hidden_size": 1, "num_attention_heads": 1,
               "num_key_value_heads": 1, "num_hidden_layers": 0,
               "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask"}, "outputs": {"logits": "logits"}}
    config = {"model": {"type": "llama", "vocab_size": 10, "context_length": 64, "bos_token_id": 0,
                        "eos_token_id": [9], "pad_token_id": 0, "decoder": decoder}, "search": {"max_length": 64}}
    (folder / "genai_config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize("prune_logits", [False, True], ids=["every-position", "pruned"])
@pytest.mark.parametrize("prompt", [[[1, 4, 2, 4, 3, 4, 1]], [[3, 4, 5, 6], [2, 7, 0, 0]]], ids=["one", "padded"])
def test_a_model_without_kv_cache_generates_what_the_peer_does(engine, prune_logits, prompt, tmp_path):
    folder = cacheless_model(tmp_path / "model", prune_logits)
    results = []
    for og in (engine, peer):
        model = og.Model(folder)
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=12, batch_size=len(prompt))
        generator = og.Generator(model, params)
        generator.append_tokens(np.array(prompt, dtype=np.int32))
        logits = generator.get_logits()
        while not generator.is_done():
            generator.generate_next_token()
        results.append(([generator.get_sequence(row).tolist() for row in range(len(prompt))], logits))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_a_log_file_that_cannot_be_opened_is_refused(engine, run_log, tmp_path):
    """The peer accepts it and writes nowhere; gentwin says so, and changes no option."""
    peer.set_log_options(filename=str(tmp_path / "no-such-folder" / "log.txt"))
    lines = []
    engine.set_log_callback(lines.append)
    engine.set_log_options(hit_max_length=True)
    with pytest.raises(RuntimeError, match="cannot open the log file"):
        engine.set_log_options(enabled=True, filename=str(tmp_path / "no-such-folder" / "log.txt"))
    generated_tokens(engine, engine.Model(str(GPT2)))
    assert lines == []  # still not enabled, and the callback still set
    engine.set_log_options(enabled=True)
    generated_tokens(engine, engine.Model(str(GPT2)))
    assert lines == ["\x1b[1m\x1b[44m  hit_max_length  \x1b[0m greedy cpu hit\n"]
