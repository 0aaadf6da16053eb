"""The 0.5-era conveniences (Model.generate, GeneratorParams members, graph capture), Config's providers, and
the module functions (device checks, GPU device id, logging): each against the peer where the peer has
it, else against values derived independently (genai_config.json, onnxruntime's provider list)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnxruntime
import pytest

import gentwin.reference
from gentwin import devices
from gentwin.errors import GentwinError
from tests.conftest import ENGINE_IDS, ENGINES, FIXTURE_MODELS, load

peer = pytest.importorskip("onnxruntime_genai")

LLAMA = FIXTURE_MODELS / "llama-fp32"
PROMPTS = [[5, 17, 42, 99, 300], [7, 64, 2, 2, 2]]  # the second right-padded with <pad> (2)


def _peer_sequences(folder, prompts, **options) -> list[list[int]]:
    model = load(peer.__name__, str(folder))
    params = peer.GeneratorParams(model)
    params.set_search_options(batch_size=len(prompts), **options)
    generator = peer.Generator(model, params)
    generator.append_tokens(np.array(prompts, dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    rows = options.get("num_return_sequences", 1) * len(prompts)
    return [[int(t) for t in generator.get_sequence(i)] for i in range(rows)]


def _padded(rows: list[list[int]], pad: int) -> np.ndarray:
    table = np.full((len(rows), max(len(row) for row in rows)), pad, np.int32)
    for out, row in zip(table, rows):
        out[: len(row)] = row
    return table


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("prompts, options", [
    (PROMPTS, {"max_length": 16}),
    (PROMPTS[:1], {"max_length": 14, "num_beams": 3, "num_return_sequences": 2}),
], ids=["greedy-batch", "beams"])
def test_model_generate_returns_the_sequences_of_the_peers_generator_loop(engine, prompts, options):
    model = load(engine.__name__, str(LLAMA))
    params = engine.GeneratorParams(model)
    params.set_search_options(**options)
    with pytest.warns(DeprecationWarning, match="generator.append_tokens"):
        params.input_ids = np.array(prompts, dtype=np.int32)  # [B, S]: batch_size B, as in 0.5
    with pytest.warns(DeprecationWarning, match="Model.generate was removed in onnxruntime-genai 0.6.0"):
        sequences = model.generate(params)
    assert sequences.dtype == np.int32
    np.testing.assert_array_equal(sequences, _padded(_peer_sequences(LLAMA, prompts, **options), pad=2))


def test_model_generate_needs_input_ids():
    model = load("gentwin.reference", str(LLAMA))
    with pytest.warns(DeprecationWarning), pytest.raises(GentwinError, match="needs the prompt in params.input_ids"):
        model.generate(gentwin.reference.GeneratorParams(model))


@pytest.mark.parametrize("name", ["llama-fp32", "qwen2-int4", "gpt2-fp32"])
def test_generator_params_members_are_genai_configs_values(name):
    with open(FIXTURE_MODELS / name / "genai_config.json", encoding="utf-8") as config_file:
        config = json.load(config_file)["model"]
    params = gentwin.reference.GeneratorParams(load("gentwin.reference", str(FIXTURE_MODELS / name)))
    eos = config["eos_token_id"]
    assert params.pad_token_id == config["pad_token_id"]
    assert params.eos_token_id == (eos[0] if isinstance(eos, list) else eos)
    assert params.vocab_size == config["vocab_size"]


def test_graph_capture_is_accepted_and_changes_nothing():
    og = gentwin.reference
    model = load(og.__name__, str(LLAMA))
    params = og.GeneratorParams(model)
    before = params.get_search_options()
    params.try_graph_capture_with_max_batch_size(4)
    assert params.get_search_options() == before
    with pytest.raises(TypeError, match="max_batch_size must be an int"):
        params.try_graph_capture_with_max_batch_size("4")
    with pytest.raises(ValueError, match="must be 0 or more"):
        params.try_graph_capture_with_max_batch_size(-1)


# -- Config and providers -----------------------------------------------------------------------------


def test_config_starts_with_genai_configs_providers_and_clear_keeps_their_options(tmp_path):
    folder = tmp_path / "with-providers"
    shutil.copytree(LLAMA, folder)
    config_path = folder / "genai_config.json"
    config = json.loads(config_path.read_text())
    config["model"]["decoder"]["session_options"]["provider_options"] = [
        {"cuda": {"enable_cuda_graph": "0"}}, {"dml": {}}]
    config_path.write_text(json.dumps(config))
    ours = gentwin.reference.Config(str(folder))
    assert ours.providers == ["cuda", "dml"]
    assert ours.provider_options == {"cuda": {"enable_cuda_graph": "0"}, "dml": {}}
    ours.clear_providers()
    ours.set_provider_option("qnn", "backend_path", "QnnHtp.so")
    ours.append_provider("cuda")
    assert ours.providers == ["qnn", "cuda"]
    assert ours.provider_options["cuda"] == {"enable_cuda_graph": "0"}
    config["model"]["decoder"]["session_options"]["provider_options"] = {"cuda": {}}
    config_path.write_text(json.dumps(config))
    with pytest.raises(GentwinError, match="provider_options' must be a list"):
        gentwin.reference.Config(str(folder))


def test_the_reference_ignores_providers():
    og = gentwin.reference
    config = og.Config(str(LLAMA))
    config.clear_providers()
    config.append_provider("cuda")
    config.set_provider_option("cuda", "device_id", "1")
    model = og.Model(config)
    assert model.device_type == load(peer.__name__, str(LLAMA)).device_type == "CPU"
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=16)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(PROMPTS[0], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    assert generator.get_sequence(0).tolist() == _peer_sequences(LLAMA, PROMPTS[:1], max_length=16)[0]


# -- module functions ---------------------------------------------------------------------------------

# onnxruntime's documented execution-provider names, one for each of the peer's device checks.
PROVIDER_OF_CHECK = {
    "is_cuda_available": "CUDAExecutionProvider",
    "is_dml_available": "DmlExecutionProvider",
    "is_openvino_available": "OpenVINOExecutionProvider",
    "is_qnn_available": "QNNExecutionProvider",
    "is_webgpu_available": "WebGpuExecutionProvider",
}
DEVICE_CHECKS = list(PROVIDER_OF_CHECK)


def test_the_device_checks_are_the_peers():
    assert sorted(DEVICE_CHECKS) == sorted(name for name in dir(peer) if re.fullmatch(r"is_\w+_available", name))
    assert sorted(devices.DeviceChecks._fields) == sorted(DEVICE_CHECKS)


@pytest.mark.parametrize("name", DEVICE_CHECKS)
def test_the_reference_can_use_no_device(name):
    check = getattr(gentwin.reference, name)
    assert check() is False and check.__name__ == name


@pytest.mark.parametrize("name, provider", PROVIDER_OF_CHECK.items())
def test_a_device_check_answers_for_its_own_provider_only(name, provider):
    checks = devices.device_checks([provider])
    for other in DEVICE_CHECKS:
        assert getattr(checks, other)() is (other == name), f"device_checks([{provider!r}]).{other}()"
        assert getattr(checks, other).__name__ == other
    assert not any(getattr(devices.device_checks(["CPUExecutionProvider"]), other)() for other in DEVICE_CHECKS)


def test_device_checks_answer_from_the_providers_an_engine_can_use():
    available = onnxruntime.get_available_providers()
    checks = devices.device_checks(available)
    for name, provider in PROVIDER_OF_CHECK.items():
        assert getattr(checks, name)() == (provider in available)
    assert devices.device_checks(["CUDAExecutionProvider"]).is_cuda_available()


def test_the_current_gpu_device_id_is_kept():
    og = gentwin.reference
    assert og.get_current_gpu_device_id() == 0
    try:
        og.set_current_gpu_device_id(2)
        assert og.get_current_gpu_device_id() == 2
        with pytest.raises(ValueError, match="0 or more"):
            og.set_current_gpu_device_id(-1)
        with pytest.raises(TypeError, match="must be an int"):
            og.set_current_gpu_device_id("1")
        assert og.get_current_gpu_device_id() == 2
    finally:
        og.set_current_gpu_device_id(0)


def test_log_options_take_the_peers_names_and_refuse_others():
    og = gentwin.reference
    for module in (og, peer):
        module.set_log_options(enabled=False, hit_eos=False, model_logits=False)
        with pytest.raises(RuntimeError):
            module.set_log_options(no_such_option=True)
        module.set_log_callback(None)
        module.enable_telemetry_events()
        module.disable_telemetry_events()
    with pytest.raises(GentwinError, match="unknown log option 'no_such_option'; known: enabled, ansi_tags"):
        og.set_log_options(no_such_option=True)
    with pytest.raises(TypeError, match="'enabled' takes a bool"):
        og.set_log_options(enabled="yes")
    with pytest.raises(TypeError, match="'filename' takes a str"):
        og.set_log_options(filename=3)
    with pytest.raises(TypeError, match="takes a function or None"):
        og.set_log_callback("print")
    og.set_log_callback(print)
    og.set_log_callback(None)
