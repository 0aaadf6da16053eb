"""Bad input gets a clear Python exception naming the problem, and leaves the generator as it was."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import gentwin.reference as og
from gentwin.config import ConfigError
from gentwin.reference.decoder import UnsupportedOperatorError
from gentwin.search_options import SearchOptionError
from tests.conftest import ENGINE_IDS, ENGINES, FIXTURE_MODELS, load

LLAMA = FIXTURE_MODELS / "llama-fp32"


@pytest.fixture(params=ENGINES, ids=ENGINE_IDS)
def engine(request):
    return request.param


@pytest.fixture
def model(engine):
    """Generator, GeneratorParams and the errors are gentwin.api's, the same classes on both engines."""
    return load(engine.__name__, str(LLAMA))


def generator(model, **options):
    params = og.GeneratorParams(model)
    params.set_search_options(**{"max_length": 16, **options})
    return og.Generator(model, params)


@pytest.fixture
def folder_copy(tmp_path):
    target = tmp_path / "model"
    shutil.copytree(LLAMA, target)
    return target


# -- model folders --------------------------------------------------------------------------------------


def test_missing_folder(engine, tmp_path):
    with pytest.raises(ConfigError, match="model folder not found"):
        engine.Model(str(tmp_path / "nowhere"))


def test_folder_without_genai_config(engine, tmp_path):
    with pytest.raises(ConfigError, match="no genai_config.json"):
        engine.Model(str(tmp_path))


def test_genai_config_that_is_not_json(engine, folder_copy):
    (folder_copy / "genai_config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        engine.Model(str(folder_copy))


def test_genai_config_missing_a_field(engine, folder_copy):
    config = json.loads((folder_copy / "genai_config.json").read_text())
    del config["model"]["decoder"]["num_hidden_layers"]
    (folder_copy / "genai_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="model.decoder.num_hidden_layers"):
        engine.Model(str(folder_copy))


def test_missing_model_file(engine, folder_copy):
    (folder_copy / "model.onnx").unlink()
    with pytest.raises(ConfigError, match="'model.onnx' named in genai_config.json is missing"):
        engine.Model(str(folder_copy))


def test_corrupt_model_file(engine, folder_copy):
    (folder_copy / "model.onnx").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ConfigError, match="cannot load .*model.onnx"):
        engine.Model(str(folder_copy))


def test_unsupported_operator_fails_at_load_naming_op_and_domain(folder_copy):
    node = helper.make_node("Frobnicate", ["x"], ["logits"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(folder_copy / "model.onnx"))
    with pytest.raises(UnsupportedOperatorError, match="com.example.Frobnicate"):
        og.Model(str(folder_copy))


# -- search options -------------------------------------------------------------------------------------


def test_unknown_search_option(model):
    with pytest.raises(SearchOptionError, match="unknown search option 'max_lenght'"):
        og.GeneratorParams(model).set_search_options(max_lenght=10)


@pytest.mark.parametrize("name, value", [("max_length", "ten"), ("top_k", 2.5), ("do_sample", "yes"),
                                         ("temperature", float("nan")), ("logit_bias", [1, 2])])
def test_search_option_of_the_wrong_type(model, name, value):
    with pytest.raises(SearchOptionError, match=name):
        og.GeneratorParams(model).set_search_options(**{name: value})


@pytest.mark.parametrize("options, named", [
    ({"max_length": 257}, "context_length"),
    ({"max_length": 0}, "max_length"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 33}, "batch_size"),
    ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
    ({"logit_bias": {5000: 1.0}}, "logit_bias"),
    ({"do_sample": True, "top_k": -1}, "top_k"),
    ({"do_sample": True, "top_p": 1.5}, "top_p"),
    ({"do_sample": True, "temperature": -1.0}, "temperature"),
])
def test_out_of_range_options_are_refused_when_the_generator_is_made(model, options, named):
    with pytest.raises(SearchOptionError, match=named):
        generator(model, **options)


def test_option_errors_are_runtime_errors_like_the_peers(model):
    with pytest.raises(RuntimeError):
        generator(model, max_length=10_000)


# -- tokens -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens, error, message", [
    ([5, 1024], og.GentwinError, "token id 1024 is outside the vocabulary"),
    ([5, -1], og.GentwinError, "token id -1 is outside the vocabulary"),
    (np.array([5.0, 6.0]), TypeError, "tokens must be integers"),
    (["5"], TypeError, "tokens must be integers"),
    (np.zeros((1, 1, 2), np.int32), og.GentwinError, "1-D or 2-D"),
    ([], og.GentwinError, "tokens is empty"),
])
def test_bad_tokens_are_refused_before_anything_changes(model, tokens, error, message):
    g = generator(model)
    g.append_tokens([5, 6, 7])
    before = g.get_logits().copy()
    with pytest.raises(error, match=message):
        g.append_tokens(tokens)
    assert g.token_count() == 3
    np.testing.assert_array_equal(g.get_logits(), before)


def test_rows_must_divide_into_the_batch(model):
    with pytest.raises(og.GentwinError, match="batch_size \\(2\\)"):
        generator(model, batch_size=2).append_tokens([5, 6, 7])


def test_second_append_with_a_batch(model):
    g = generator(model, batch_size=2)
    g.append_tokens([[5, 6], [7, 8]])
    with pytest.raises(og.GentwinError, match="only be called once for batch_size > 1"):
        g.append_tokens([[9], [9]])


def test_second_append_with_beam_search(model):
    g = generator(model, num_beams=2)
    g.append_tokens([[5, 6]])
    g.generate_next_token()
    with pytest.raises(og.GentwinError, match="only be called once with beam search"):
        g.append_tokens([[9]])


def test_append_past_max_length(model):
    g = generator(model, max_length=4)
    with pytest.raises(og.GentwinError, match="exceeds max_length \\(4\\)"):
        g.append_tokens([5, 6, 7, 8, 9])


# -- the generate loop ---------------------------------------------------------------------------------------


def test_generate_before_any_tokens(model):
    with pytest.raises(og.GentwinError, match="append_tokens first"):
        generator(model).generate_next_token()


def test_generate_and_append_after_done_at_max_length(model):
    g = generator(model, max_length=6)
    g.append_tokens([5, 6, 7])
    while not g.is_done():
        g.generate_next_token()
    assert g.token_count() == 6
    with pytest.raises(og.GentwinError, match="already at max_length \\(6\\)"):
        g.generate_next_token()
    with pytest.raises(og.GentwinError, match="exceeds max_length"):
        g.append_tokens([5])


def test_rewind_past_the_current_length(model):
    g = generator(model)
    g.append_tokens([5, 6, 7])
    with pytest.raises(og.GentwinError, match="cannot rewind to length 4: the sequence has 3 tokens"):
        g.rewind_to(4)
    with pytest.raises(og.GentwinError, match="cannot rewind to length -1"):
        g.rewind_to(-1)


def test_set_logits_of_the_wrong_size(model):
    g = generator(model)
    g.append_tokens([5, 6, 7])
    with pytest.raises(og.GentwinError, match="1 x 1024"):
        g.set_logits(np.zeros(10, np.float32))


def test_get_output_of_an_unknown_name(model):
    g = generator(model)
    g.append_tokens([5, 6, 7])
    assert g.get_output("logits").shape == (1, 3, 1024)
    with pytest.raises(og.GentwinError, match="no output named 'hidden'"):
        g.get_output("hidden")


def test_get_sequence_out_of_range(model):
    g = generator(model)
    g.append_tokens([5, 6, 7])
    with pytest.raises(IndexError, match="sequence index 1"):
        g.get_sequence(1)
