"""Extra model inputs against the peer: set_model_input, get_input, Tensor and NamedTensors.

The models are the LoRA-ready fixtures, whose LoRA weights are extra inputs: as built they have defaults
(rank-0 initializers), and `required_lora_model` strips the defaults so that the inputs must be fed.
The peer's set_model_input only reaches inputs without a default, and only before the first
append_tokens; the tests pin that, and check gentwin's wider behaviour against the same values fed
through the peer's adapters.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

import gentwin.reference
from gentwin.errors import GentwinError
from gentwin.fixtures.adapters import random_lora_weights, write_adapter_file
from gentwin.graph_inputs import ModelInputError
from gentwin.tensors import SUPPORTED_DTYPES, TensorNotFoundError
from tests.conftest import ENGINE_IDS, ENGINES, FIXTURE_MODELS, load
from tests.helpers import assert_same_run, loaded_adapters

peer = pytest.importorskip("onnxruntime_genai")

PROMPT = np.array([5, 17, 42, 99, 300, 7, 64], dtype=np.int32)
STEPS = 8


@pytest.fixture(scope="module")
def lora_model(lora_models):
    return lora_models["llama-lora-fp32"]


@pytest.fixture(scope="module")
def required_lora_model(lora_model, tmp_path_factory):
    """llama-lora-fp32 without the defaults of its LoRA inputs: they must be fed for the model to run."""
    folder = tmp_path_factory.mktemp("required") / "llama-lora-required"
    shutil.copytree(lora_model, folder)
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    inputs = {value.name for value in proto.graph.input}
    kept = [tensor for tensor in proto.graph.initializer if tensor.name not in inputs]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    (folder / "model.onnx").write_bytes(proto.SerializeToString())
    return folder


@pytest.fixture(scope="module")
def weights(lora_model):
    return {"A": random_lora_weights(str(lora_model), rank=4, seed=11),
            "B": random_lora_weights(str(lora_model), rank=6, seed=12)}


@pytest.fixture(scope="module")
def adapter_files(weights, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    return {name: write_adapter_file(str(folder / f"{name}.onnx_adapter"), w) for name, w in weights.items()}


def _generator(og, folder, **options):
    model = load(og.__name__, str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(PROMPT) + STEPS, **options)
    return og.Generator(model, params)


def _set_all(generator, weights: dict) -> None:
    for name, value in weights.items():
        generator.set_model_input(name, value)


def _adapters(og, folder, adapter_files: dict):
    return loaded_adapters(og, load(og.__name__, str(folder)), adapter_files)


def _at_step(step: int, action):
    """An on_step callback for _finish: ACTION() after generated token number STEP."""
    return lambda done: action() if done == step else None


def _finish(generator, on_step=None):
    """Append PROMPT unless there are tokens, then generate to the end, calling ON_STEP(tokens generated)
    after each token. Returns the generated tokens and every step's logits."""
    if generator.token_count() == 0:
        generator.append_tokens(PROMPT)
    logits = []
    while not generator.is_done():
        logits.append(generator.get_logits()[:, 0, :].copy())
        generator.generate_next_token()
        if on_step:
            on_step(len(logits))
    return [int(t) for t in generator.get_sequence(0)[len(PROMPT):]], np.concatenate(logits)


# -- set_model_input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_inputs_without_defaults_set_by_set_model_input_match_the_peer(engine, required_lora_model, lora_model,
                                                                      weights, adapter_files):
    runs = []
    for og in (engine, peer):
        generator = _generator(og, required_lora_model)
        _set_all(generator, weights["A"])
        runs.append(_finish(generator))
    assert_same_run(*runs)
    via_adapter = _generator(peer, lora_model)
    via_adapter.set_active_adapter(_adapters(peer, lora_model, adapter_files), "A")
    assert_same_run(runs[0], _finish(via_adapter))


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_a_missing_input_without_default_is_named_before_anything_runs(engine, required_lora_model):
    with pytest.raises(RuntimeError, match="Missing Input"):
        peer_generator = _generator(peer, required_lora_model)
        peer_generator.append_tokens(PROMPT)
    generator = _generator(engine, required_lora_model)
    with pytest.raises(GentwinError, match=r"needs input\(s\) model\.layers\.0\.attn\.o_proj\.lora_A\.weight, .*"
                                           r"set them with set_model_input"):
        generator.append_tokens(PROMPT)
    assert generator.token_count() == 0


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("order", ["input_first", "adapter_first"])
def test_an_adapter_wins_over_set_model_input_as_in_the_peer(engine, order, required_lora_model, weights,
                                                             adapter_files):
    runs = []
    for og in (engine, peer):
        generator, adapters = _generator(og, required_lora_model), _adapters(og, required_lora_model, adapter_files)
        if order == "adapter_first":
            generator.set_active_adapter(adapters, "B")
        _set_all(generator, weights["A"])
        if order == "input_first":
            generator.set_active_adapter(adapters, "B")
        runs.append(_finish(generator))
    assert_same_run(*runs)


def test_the_peer_ignores_set_model_input_for_inputs_with_defaults_and_after_the_first_append(
        lora_model, required_lora_model, weights):
    """Pins the peer behaviour README "Differences" describes; when this fails, update the note."""
    base = _finish(_generator(peer, lora_model))[0]
    ignored = _generator(peer, lora_model)
    _set_all(ignored, weights["A"])
    assert _finish(ignored)[0] == base
    unknown = _generator(peer, lora_model)
    unknown.set_model_input("not_an_input", np.zeros(3, np.float32))
    assert _finish(unknown)[0] == base
    first_only = _generator(peer, required_lora_model)
    _set_all(first_only, weights["A"])
    switched = _finish(first_only, on_step=_at_step(3, lambda: _set_all(first_only, weights["B"])))[0]
    only_a = _generator(peer, required_lora_model)
    _set_all(only_a, weights["A"])
    assert switched == _finish(only_a)[0]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_gentwin_feeds_inputs_with_defaults_and_changes_after_the_first_append(engine, lora_model, weights,
                                                                             adapter_files):
    """What the peer does for the same values given as adapters, which it applies at once."""
    generator = _generator(engine, lora_model)
    _set_all(generator, weights["A"])
    ours = _finish(generator, on_step=_at_step(3, lambda: _set_all(generator, weights["B"])))
    expected, adapters = _generator(peer, lora_model), _adapters(peer, lora_model, adapter_files)
    expected.set_active_adapter(adapters, "A")
    theirs = _finish(expected, on_step=_at_step(3, lambda: expected.set_active_adapter(adapters, "B")))
    assert_same_run(ours, theirs)
    only_a = _generator(engine, lora_model)
    _set_all(only_a, weights["A"])
    a_stream = _finish(only_a)[0]
    assert ours[0][:3] == a_stream[:3] and ours[0] != a_stream


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_generator_params_set_model_input_feeds_every_generator_made_from_them(engine, lora_model, weights):
    model = load(engine.__name__, str(lora_model))
    params = engine.GeneratorParams(model)
    params.set_search_options(max_length=len(PROMPT) + STEPS)
    for name, value in weights["A"].items():
        params.set_model_input(name, value)
    from_params = [_finish(engine.Generator(model, params)) for _ in range(2)]
    direct = _generator(engine, lora_model)
    _set_all(direct, weights["A"])
    expected = _finish(direct)
    for run in from_params:
        assert_same_run(run, expected)
    assert expected[0] != _finish(_generator(engine, lora_model))[0]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_a_value_is_copied_when_set(engine, lora_model, weights):
    generator = _generator(engine, lora_model)
    mutable = {name: value.copy() for name, value in weights["A"].items()}
    _set_all(generator, mutable)
    for value in mutable.values():
        value[...] = 0
    reference = _generator(engine, lora_model)
    _set_all(reference, weights["A"])
    assert _finish(generator)[0] == _finish(reference)[0]


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_bad_model_inputs_are_refused_naming_the_problem_and_change_nothing(engine, lora_model, weights):
    generator = _generator(engine, lora_model)
    name = next(iter(weights["A"]))
    value = weights["A"][name]
    cases = [
        (ModelInputError, r"has no input named 'nope'; its extra inputs are model\.layers\.0", "nope", value),
        (ModelInputError, r"'input_ids' is fed by the generator itself", "input_ids", PROMPT[None, :]),
        (ModelInputError, r"'past_key_values\.1\.value' is fed by the generator", "past_key_values.1.value", value),
        (TypeError, r"takes float32, got float64", name, value.astype(np.float64)),
        (ModelInputError, r"\[64, lora_r\]\) cannot take an array of shape \(64,\)", name, value[:, 0]),
        (ModelInputError, r"cannot take an array of shape \(65, 4\)", name, np.zeros((65, 4), np.float32)),
        (TypeError, r"the input name must be a str", 3, value),
    ]
    for error, message, input_name, input_value in cases:
        with pytest.raises(error, match=message):
            generator.set_model_input(input_name, input_value)
    assert generator.state.extra_inputs == {}
    assert _finish(generator)[0] == _finish(_generator(engine, lora_model))[0]


# -- get_input ----------------------------------------------------------------------------------------


def _inputs_after(og, folder, names, prompts, steps, setup=None):
    generator = _generator(og, folder, batch_size=len(prompts))
    if setup:
        setup(generator)
    generator.append_tokens(np.array(prompts, dtype=np.int32))
    seen = [{name: generator.get_input(name) for name in names}]
    for _ in range(steps):
        generator.generate_next_token()
        generator.get_logits()  # run the new token, so that the inputs are those of a run after generation
        seen.append({name: generator.get_input(name) for name in names})
    return seen


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("model_name, names", [
    ("llama-fp32", ["input_ids", "attention_mask"]),
    ("mistral-mha-fp32", ["input_ids", "attention_mask", "position_ids"]),
    ("gpt2-fp32", ["input_ids", "attention_mask", "position_ids"]),
])
def test_get_input_returns_what_the_peer_fed(engine, model_name, names):
    folder = FIXTURE_MODELS / model_name
    prompts = [[5, 17, 42, 99], [7, 300, 2, 2]]  # the second row right-padded with <pad> (2)
    ours, theirs = (_inputs_after(og, folder, names, prompts, steps=3) for og in (engine, peer))
    for step, (mine, peers) in enumerate(zip(ours, theirs)):
        for name in names:
            assert mine[name].dtype == peers[name].dtype, (step, name)
            np.testing.assert_array_equal(mine[name], peers[name], err_msg=f"step {step}, {name}")


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_get_input_returns_an_extra_input_as_the_peer_does(engine, required_lora_model, weights):
    name = next(iter(weights["A"]))
    ours, theirs = (_inputs_after(og, required_lora_model, [name], [PROMPT.tolist()], steps=1,
                                  setup=lambda generator: _set_all(generator, weights["A"]))
                    for og in (engine, peer))
    np.testing.assert_array_equal(ours[-1][name], theirs[-1][name])
    np.testing.assert_array_equal(ours[-1][name], weights["A"][name])


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_get_input_of_an_input_not_fed_fails_on_both(engine):
    for og in (engine, peer):
        generator = _generator(og, FIXTURE_MODELS / "llama-fp32")
        with pytest.raises(RuntimeError, match="not found|has not run yet"):
            generator.get_input("input_ids")
        generator.append_tokens(PROMPT)
        with pytest.raises(RuntimeError, match=r"not found|no input named 'position_ids' was fed; the last run fed"):
            generator.get_input("position_ids")


# -- Tensor, NamedTensors, set_inputs -----------------------------------------------------------------


def test_tensor_holds_a_copy_like_the_peers_for_every_supported_dtype():
    og = gentwin.reference
    rng = np.random.default_rng(0)
    for dtype in SUPPORTED_DTYPES:
        source = np.asarray(rng.standard_normal((3, 4)) * 50).astype(dtype)
        ours, theirs = og.Tensor(source), peer.Tensor(source)
        source[...] = 0
        assert ours.shape() == theirs.shape() == [3, 4]
        np.testing.assert_array_equal(ours.as_numpy(), theirs.as_numpy())
        assert ours.as_numpy().dtype == theirs.as_numpy().dtype == dtype
        assert ours.type() == onnx.helper.np_dtype_to_tensor_dtype(dtype)
        np.testing.assert_array_equal(np.asarray(ours), theirs.as_numpy())
        assert bytes(ours.data()) == theirs.as_numpy().tobytes()
    fortran = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    np.testing.assert_array_equal(og.Tensor(fortran).as_numpy(), fortran)
    with pytest.raises(TypeError):
        peer.Tensor([1, 2, 3])
    with pytest.raises(TypeError, match="Tensor takes a numpy.ndarray, got list"):
        og.Tensor([1, 2, 3])
    with pytest.raises(RuntimeError, match="Unsupported numpy type"):
        peer.Tensor(np.array(["a"]))
    with pytest.raises(TypeError, match="Tensor cannot hold dtype <U1"):
        og.Tensor(np.array(["a"]))


def test_the_peers_tensor_type_fails():
    """Pins the peer's broken Tensor.type() (README, "Compatibility"); gentwin returns the ONNX type number."""
    with pytest.raises(TypeError, match="Unable to convert function return value"):
        peer.Tensor(np.zeros(2, np.float32)).type()


def test_named_tensors_behave_like_the_peers():
    og = gentwin.reference
    for module in (og, peer):
        named = module.NamedTensors()
        named["a"] = np.arange(3, dtype=np.float32)
        named["b"] = module.Tensor(np.ones((2, 2), np.int64))
        named["a"] = np.arange(4, dtype=np.int32)  # replaces
        assert len(named) == 2 and sorted(named.keys()) == ["a", "b"]
        assert "a" in named and "c" not in named
        np.testing.assert_array_equal(named["a"].as_numpy(), np.arange(4, dtype=np.int32))
        assert named["b"].shape() == [2, 2]
        with pytest.raises(RuntimeError, match="Tensor with name: c not found|no tensor named 'c'; names: "):
            named["c"]
        del named["a"]
        assert named.keys() == ["b"]
    with pytest.raises(KeyError):
        og.NamedTensors()["missing"]
    with pytest.raises(TensorNotFoundError, match="no tensor named 'missing'"):
        del og.NamedTensors()["missing"]
    with pytest.raises(TypeError, match="tensor names are str"):
        og.NamedTensors()[1] = np.zeros(1)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_set_inputs_is_refused_for_decoder_only_models_as_by_the_peer(engine):
    for og in (engine, peer):
        generator = _generator(og, FIXTURE_MODELS / "llama-fp32")
        named = og.NamedTensors()
        named["input_ids"] = PROMPT[None, :]
        with pytest.raises(RuntimeError, match=r"(?i)Please use generator\.append_?tokens for llama"):
            generator.set_inputs(named)
    with pytest.raises(TypeError, match="set_inputs takes a NamedTensors"):
        generator = _generator(engine, FIXTURE_MODELS / "llama-fp32")
        generator.set_inputs({"input_ids": PROMPT})


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_append_tokens_takes_a_tensor_as_the_peers_does(engine):
    streams = []
    for og in (engine, peer):
        generator = _generator(og, FIXTURE_MODELS / "llama-fp32")
        generator.append_tokens(og.Tensor(PROMPT))
        streams.append(_finish(generator)[0])
    assert streams[0] == streams[1]
