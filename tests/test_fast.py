"""What gentwin.fast adds to the shared API: buffers allocated once, the peer's outputs, session options and
execution providers, and the CUDA path (skipped where there is none)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime
import onnxruntime_genai as og
import pytest

import gentwin.fast as fast
from gentwin import devices
from gentwin.config import ConfigError
from gentwin.fast import decoder
from gentwin.errors import GentwinError
from tests.conftest import FIXTURE_MODELS, load
from tests.helpers import env_with_stub_packages, new_generator

LLAMA = FIXTURE_MODELS / "llama-fp32"        # GQA, shared buffer
MISTRAL_MHA = FIXTURE_MODELS / "mistral-mha-fp32"  # separate growing past
GPT2 = FIXTURE_MODELS / "gpt2-fp32"          # combined growing past


def cache_addresses(generator) -> set:
    return {flat.ctypes.data for cache in generator.state.caches for flat in cache.current + (cache.spare or [])}


@pytest.mark.parametrize("path", [LLAMA, MISTRAL_MHA, GPT2], ids=lambda p: p.name)
@pytest.mark.parametrize("options", [{}, {"num_beams": 3}], ids=["greedy", "beams"])
def test_the_kv_cache_is_allocated_once(path, options):
    """Growing, rewinding and reordering the cache reuse the buffers made with the generator."""
    generator = new_generator(fast, path, [[5, 17, 42]], max_length=32, **options)
    generator.generate_next_token()
    allocated = cache_addresses(generator)
    for _ in range(8):
        generator.generate_next_token()
        assert cache_addresses(generator) <= allocated
    if not options:
        generator.rewind_to(5)
        generator.append_tokens([[9, 10]])
        generator.generate_next_token()
        assert cache_addresses(generator) <= allocated


def test_a_shared_buffer_is_bound_once():
    generator = new_generator(fast, LLAMA, [[5, 17, 42]], max_length=32)
    caches = generator.state.caches
    addresses = cache_addresses(generator)
    for _ in range(5):
        generator.generate_next_token()
    assert all(cache.bound and cache.spare is None for cache in caches) and cache_addresses(generator) == addresses


@pytest.mark.parametrize("path", [LLAMA, MISTRAL_MHA, GPT2], ids=lambda p: p.name)
def test_get_output_matches_the_peer(path):
    """Logits of every position of the last run and the presents, as the peer returns them."""
    prompt = [[5, 17, 42, 9]]
    peer, ours = new_generator(og, path, prompt, max_length=32), new_generator(fast, path, prompt, max_length=32)
    present = load("gentwin.fast", str(path)).config.decoder.present_names(0)[0]
    for step in range(3):
        for name in ("logits", present):
            expected = peer.get_output(name)
            assert ours.get_output(name).shape == expected.shape, (step, name)
            np.testing.assert_array_equal(ours.get_output(name), expected, err_msg=f"step {step}, {name}")
        for generator in (peer, ours):
            generator.generate_next_token()
            generator.get_logits()  # run the model on the new token, so get_output shows that run


def folder_with_session_options(tmp_path, **session_options):
    target = tmp_path / "-".join(session_options)
    shutil.copytree(LLAMA, target)
    config = json.loads((target / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"].update(session_options)
    (target / "genai_config.json").write_text(json.dumps(config))
    return str(target)


def test_session_options_of_genai_config_are_applied(tmp_path):
    model = fast.Model(folder_with_session_options(tmp_path, intra_op_num_threads=1,
                                                   graph_optimization_level="ORT_ENABLE_BASIC"))
    options = model.graph.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_unknown_session_options_are_refused(tmp_path):
    with pytest.raises(GentwinError, match="unknown decoder.session_options key 'intra_op_threads'"):
        fast.Model(folder_with_session_options(tmp_path, intra_op_threads=1))
    with pytest.raises(GentwinError, match="graph_optimization_level 'ALL'"):
        fast.Model(folder_with_session_options(tmp_path, graph_optimization_level="ALL"))


def test_providers_come_from_the_config():
    config = fast.Config(str(LLAMA))
    config.clear_providers()
    config.append_provider("telepathy")
    with pytest.raises(GentwinError, match="unknown execution provider 'telepathy'"):
        fast.Model(config)
    config.clear_providers()
    assert fast.Model(config).device_type == "CPU"


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(), reason="CUDA is available")
def test_an_unavailable_provider_is_named():
    config = fast.Config(str(LLAMA))
    config.append_provider("cuda")
    with pytest.raises(GentwinError, match="execution provider 'cuda' is not available"):
        fast.Model(config)


def test_the_cuda_session_runs_on_the_current_gpu_unless_the_config_names_one(monkeypatch):
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    config = fast.Config(str(LLAMA))
    config.append_provider("cuda")
    monkeypatch.setattr(devices, "_current_gpu_device_id", 0)
    fast.set_current_gpu_device_id(1)
    assert decoder.execution_providers(config)[0] == ("CUDAExecutionProvider", {"device_id": "1"})
    config.set_provider_option("cuda", "device_id", "0")
    assert decoder.execution_providers(config)[0] == ("CUDAExecutionProvider", {"device_id": "0"})


def test_a_cpu_run_never_imports_cupy(tmp_path):
    # A stand-in cupy is importable, so even a guarded `try: import cupy` would show in sys.modules.
    env = env_with_stub_packages(tmp_path / "stubs", "cupy")
    stub = str(tmp_path / "stubs" / "cupy" / "__init__.py")
    script = ("import sys, numpy as np, gentwin.fast as og\n"
              f"m = og.Model({str(LLAMA)!r}); p = og.GeneratorParams(m); p.set_search_options(max_length=8)\n"
              "g = og.Generator(m, p); g.append_tokens(np.array([[5, 6]])); g.generate_next_token()\n"
              "print('cupy' in sys.modules)\n"
              f"import cupy; print(cupy.__file__ == {stub!r})")  # the stand-in is the cupy it would get
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
    assert run.stdout == "False\nTrue\n"


def test_corrupt_model_file_names_the_file(tmp_path):
    target = tmp_path / "model"
    shutil.copytree(LLAMA, target)
    (target / "model.onnx").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ConfigError, match="cannot load .*model.onnx"):
        fast.Model(str(target))


def _cuda_ready() -> bool:
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # cupy missing, or no driver: either way no CUDA run here
        return False


@pytest.mark.skipif(not _cuda_ready(), reason="no CUDA: onnxruntime-gpu, cupy and a GPU are needed")
@pytest.mark.parametrize("path", [LLAMA, MISTRAL_MHA, GPT2], ids=lambda p: p.name)
@pytest.mark.parametrize("options", [{}, {"do_sample": True, "random_seed": 3, "top_k": 20, "top_p": 0.9}],
                         ids=["greedy", "sampled"])
def test_cuda_streams_equal_cpu_streams(path, options):
    config = fast.Config(str(path))
    config.append_provider("cuda")
    cuda_model = fast.Model(config)
    assert cuda_model.device_type == "CUDA"
    streams = []
    for model in (load("gentwin.fast", str(path)), cuda_model):
        params = fast.GeneratorParams(model)
        params.set_search_options(max_length=24, **options)
        generator = fast.Generator(model, params)
        generator.append_tokens(np.array([[5, 17, 42]], dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
        streams.append(generator.get_sequence(0).tolist())
    assert streams[0] == streams[1]
