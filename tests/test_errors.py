"""Bad input gets a clear Python exception naming the problem, and leaves the generator as it was."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime_genai as peer_og
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
    return generator_of(og, model, **options)


def generator_of(module, model, **options):
    """A Generator of MODULE (an engine, or the peer) with max_length 16 unless OPTIONS say otherwise."""
    params = module.GeneratorParams(model)
    params.set_search_options(**{"max_length": 16, **options})
    return module.Generator(model, params)


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


# -- argument types and values: refused before anything changes ------------------------------------------


@pytest.fixture(params=["llama-fp32", "gpt2-fp32"])
def generated(engine, request):
    """A generator of either fixture (gpt2's combined past rewinds by copying) after a prompt of 4 and 1
    generated token."""
    g = generator(load(engine.__name__, str(FIXTURE_MODELS / request.param)))
    g.append_tokens([5, 6, 7, 8])
    g.generate_next_token()
    return g


@pytest.mark.parametrize("length, shown", [(4.0, "float 4.0"), (1.5, "float 1.5"), (True, "bool True"),
                                           (None, "NoneType None"), ("1", "str '1'"),
                                           (np.float64(2.0), "float64 np.float64(2.0)")])
def test_rewind_to_takes_only_an_int(generated, length, shown):
    sequence = generated.get_sequence(0).tolist()
    with pytest.raises(TypeError, match=f"rewind_to: length must be an int, got {re.escape(shown)}"):
        generated.rewind_to(length)
    assert generated.token_count() == 5 and generated.get_sequence(0).tolist() == sequence
    generated.generate_next_token()  # and the generator still works
    assert generated.token_count() == 6


def test_rewind_to_takes_numpy_integers(generated):
    generated.rewind_to(np.int64(2))
    assert generated.token_count() == 2 and type(generated.token_count()) is int
    assert generated.get_sequence(np.int32(0)).tolist() == [5, 6]


def test_the_peer_takes_true_for_one():
    """README, Differences 5: the peer rewinds to 1 on rewind_to(True); gentwin refuses it (above)."""
    g = generator_of(peer_og, load("onnxruntime_genai", str(LLAMA)))
    g.append_tokens(np.array([5, 6, 7, 8], np.int32))
    g.rewind_to(True)
    assert g.get_sequence(0).tolist() == [5]


@pytest.mark.parametrize("index, error, message", [
    ("0", TypeError, "get_sequence: index must be an int, got str '0'"),
    (1.0, TypeError, "get_sequence: index must be an int, got float 1.0"),
    (True, TypeError, "get_sequence: index must be an int, got bool True"),
    (None, TypeError, "get_sequence: index must be an int"),
    (-1, IndexError, r"get_sequence: sequence index -1 is out of range \[0, 1\)"),
])
def test_get_sequence_takes_an_index_in_range(generated, index, error, message):
    with pytest.raises(error, match=message) as raised:
        generated.get_sequence(index)
    assert isinstance(raised.value, og.GentwinError)


@pytest.mark.parametrize("tokens, message", [
    ([[5, 6], [7]], "append_tokens: tokens must be a rectangular array"),
    ([True, False], "append_tokens: tokens must be integers, got dtype bool"),
    (None, "append_tokens: tokens must be integers, got dtype object"),
    ([2**70], "append_tokens: tokens must be integers, got dtype object"),
])
def test_tokens_that_are_not_an_integer_array(generated, tokens, message):
    with pytest.raises(og.GentwinError, match=re.escape(message)):
        generated.append_tokens(tokens)
    assert generated.token_count() == 5


# -- set_logits ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, shown", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf"), (1e300, "1e+300")])
def test_set_logits_refuses_values_that_are_not_finite_float32(model, bad, shown):
    g = generator(model)
    g.append_tokens([5, 6, 7])
    before = g.get_logits()
    logits = np.zeros(1024)                     # float64, so that 1e300 is representable until the cast
    logits[[17, 900]] = bad
    with pytest.raises(ValueError, match=rf"set_logits: 2 logits are NaN, infinite or beyond float32's range; "
                                         rf"the first is (np\.float64\()?{re.escape(shown)}\)? at flat index 17"):
        g.set_logits(logits)
    np.testing.assert_array_equal(g.get_logits(), before)


def test_set_logits_needs_computed_logits_as_the_peers(model):
    """Before any append_tokens, right after generate_next_token and after rewind_to there are no logits to
    replace. The peer refuses the last two in these words; it takes the first and then generates token 0."""
    g = generator(model)
    zeros = np.zeros((1, 1024), np.float32)
    with pytest.raises(og.GentwinError, match="set_logits: logits are not computed yet"):
        g.set_logits(zeros)
    assert g.token_count() == 0
    peer_model = load("onnxruntime_genai", str(LLAMA))
    peer = generator_of(peer_og, peer_model)
    for g in (generator(model), peer):
        g.append_tokens(np.array([5, 6, 7], np.int32))
        g.generate_next_token()
        with pytest.raises(RuntimeError, match="logits are not computed yet"):
            g.set_logits(zeros)
        g.rewind_to(2)
        with pytest.raises(RuntimeError, match="logits are not computed yet"):
            g.set_logits(zeros)
    peer = generator_of(peer_og, peer_model)
    peer.set_logits(zeros)
    peer.generate_next_token()
    assert peer.get_sequence(0).tolist() == [0]  # the peer's silent acceptance (README, Differences 5)


def test_set_logits_twice_replaces_as_the_peers(model):
    first, second = np.zeros((1, 1024), np.float32), np.zeros((1, 1024), np.float32)
    first[0, 10], second[0, 20] = 5.0, 5.0
    chosen = []
    for g in (generator(model), generator_of(peer_og, load("onnxruntime_genai", str(LLAMA)))):
        g.append_tokens(np.array([5, 6, 7], np.int32))
        g.set_logits(first)
        g.set_logits(second)
        g.generate_next_token()
        chosen.append(g.get_sequence(0).tolist())
    assert chosen[0] == chosen[1] == [5, 6, 7, 20]


def test_set_logits_after_a_batch_step_is_refused(model):
    """Without the check, the next step ran two tokens per row through the model and failed in attention."""
    g = generator(model, batch_size=2)
    g.append_tokens([[5, 6, 7], [8, 9, 10]])
    g.set_logits(np.zeros((2, 1024), np.float32))
    g.generate_next_token()
    with pytest.raises(og.GentwinError, match="logits are not computed yet"):
        g.set_logits(np.zeros((2, 1024), np.float32))
    g.generate_next_token()
    assert g.token_count() == 5


# -- search options, tokenizer, chat template -------------------------------------------------------------


@pytest.mark.parametrize("value", [2, 1, 0, 1.0, None])
def test_do_sample_must_be_a_bool_as_for_the_peer(model, value):
    expected = f"search option 'do_sample' must be a bool, got {type(value).__name__}"
    with pytest.raises(SearchOptionError, match=expected):
        og.GeneratorParams(model).set_search_options(do_sample=value)
    with pytest.raises(RuntimeError, match="do_sample"):
        peer_og.GeneratorParams(load("onnxruntime_genai", str(LLAMA))).set_search_options(do_sample=value)


def test_one_bad_search_option_refuses_the_whole_call(model):
    params = og.GeneratorParams(model)
    with pytest.raises(SearchOptionError, match="'num_beams' must be a finite number, got bool True"):
        params.set_search_options(max_length=12, num_beams=True)
    assert params.get_search_options()["max_length"] == 256


@pytest.mark.parametrize("call, error, message", [
    (lambda t: t.encode("ab\ud800c"), ValueError, r"encode: text is not valid Unicode: a lone surrogate U\+D800 "
                                                  r"at index 2"),
    (lambda t: t.encode_batch(["ok", "\udfff"]), ValueError, r"encode_batch: texts\[1\] is not valid Unicode"),
    (lambda t: t.decode([[5, 6], [7]]), ValueError, "decode: tokens must be a rectangular array"),
    (lambda t: t.apply_chat_template("[]", template_str=5), TypeError,
     "apply_chat_template: template_str must be a str, got int 5"),
    (lambda t: t.apply_chat_template("[]", add_generation_prompt=None), TypeError,
     "apply_chat_template: add_generation_prompt must be a bool"),
    (lambda t: t.apply_chat_template("[" * 100_000 + "]" * 100_000), og.GentwinError,
     "messages is nested too deeply to parse"),
    (lambda t: t.apply_chat_template('{"role": "user", "content": "Hi"}'), og.GentwinError,
     "messages must be a JSON array of messages, got dict"),
    (lambda t: t.update_options(skip_special_tokens=False, add_special_tokens=None), TypeError,
     "update_options: add_special_tokens must be a bool, an int or a str, got NoneType None"),
])
def test_tokenizer_arguments_are_named(model, call, error, message):
    tokenizer = og.Tokenizer(model)
    with pytest.raises(error, match=message) as raised:
        call(tokenizer)
    assert isinstance(raised.value, og.GentwinError)
    assert tokenizer.decode(tokenizer.eos_token_ids) == "", "skip_special_tokens is still on"


def test_the_peer_crashes_on_deeply_nested_messages(tmp_path):
    """README, Differences 5: the peer's JSON parser overflows its stack (gentwin refuses, above)."""
    program = ("import onnxruntime_genai as og; "
               f"og.Tokenizer(og.Model({str(LLAMA)!r})).apply_chat_template('[' * 100000 + ']' * 100000)")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=120)
    assert result.returncode < 0, result  # killed by a signal (SIGSEGV)


def test_constructors_name_what_they_take(engine, model):
    with pytest.raises(TypeError, match="Config: the model folder must be a str or os.PathLike path, got int 5"):
        engine.Config(5)
    with pytest.raises(TypeError, match="GeneratorParams takes a Model as model, got str"):
        engine.GeneratorParams(str(LLAMA))
    with pytest.raises(TypeError, match="Generator takes a GeneratorParams as params, got dict"):
        engine.Generator(model, {"max_length": 16})
    other = load(engine.__name__, str(FIXTURE_MODELS / "gpt2-fp32"))
    with pytest.raises(ValueError, match="Generator: params were made for another Model"):
        engine.Generator(model, engine.GeneratorParams(other))
    config = engine.Config(str(LLAMA))
    with pytest.raises(TypeError, match="set_provider_option: value must be a str, got int 0"):
        config.set_provider_option("cuda", "device_id", 0)
    assert "cuda" not in config.providers


def test_the_peer_takes_nan_logits():
    """README, Differences 5: on a row of NaN the peer's greedy search picks token 0 (gentwin refuses NaN)."""
    g = generator_of(peer_og, load("onnxruntime_genai", str(LLAMA)))
    g.append_tokens(np.array([5, 6, 7], np.int32))
    g.set_logits(np.full((1, 1024), np.nan, np.float32))
    g.generate_next_token()
    assert g.get_sequence(0).tolist() == [5, 6, 7, 0]
