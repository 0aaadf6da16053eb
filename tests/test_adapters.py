"""LoRA adapters against the peer: the same .onnx_adapter files give the same streams and logits on fixture
models made for adapters, generators never leak an adapter into one another, and the container's rules
(load, unload, in use) are the peer's. The files are written by onnxruntime; gentwin.reference reads
them with its own reader, which is checked here on every dtype and on corrupt files."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest

from gentwin import adapters as gentwin_adapters
from gentwin.adapters import AdapterError, read_adapter_file
from gentwin.fixtures.adapters import random_lora_weights, write_adapter_file
from gentwin.graph_inputs import ModelInputError
from tests.conftest import ENGINE_IDS, ENGINES, load
from tests.helpers import assert_same_run, loaded_adapters

peer = pytest.importorskip("onnxruntime_genai")

PROMPT = [5, 17, 42, 99, 300, 7, 64]
STEPS = 10
LORA_MODELS = ["llama-lora-fp32", "qwen2-lora-int4"]
BASE_MODELS = {"llama-lora-fp32": "llama-text-fp32", "qwen2-lora-int4": "qwen2-text-int4"}
# Which adapters a generator activates, in order. "layers0" and "layers1" hold disjoint halves of the
# parameters; "A" and "B" hold all of them, with ranks 4 and 8.
SCENARIOS = [(), ("A",), ("B",), ("A", "B"), ("B", "A"), ("layers0",), ("layers0", "layers1")]


@pytest.fixture(scope="module")
def adapter_files(lora_models, tmp_path_factory) -> dict[str, dict[str, str]]:
    """model name -> adapter name -> .onnx_adapter path, written by onnxruntime."""
    files = {}
    for model_name, folder in lora_models.items():
        out = tmp_path_factory.mktemp(model_name)
        full = {"A": random_lora_weights(str(folder), rank=4, seed=1),
                "B": random_lora_weights(str(folder), rank=8, seed=2)}
        other = random_lora_weights(str(folder), rank=2, seed=3)
        full["layers0"] = {name: w for name, w in other.items() if name.startswith("model.layers.0.")}
        full["layers1"] = {name: w for name, w in other.items() if not name.startswith("model.layers.0.")}
        files[model_name] = {name: write_adapter_file(str(out / f"{name}.onnx_adapter"), weights)
                             for name, weights in full.items()}
    return files


def _model(og, folder):
    return load(og.__name__, str(folder))


class Stream:
    """One generator's greedy run: append PROMPT, then generate, keeping every step's logits."""

    def __init__(self, og, model, adapters=None, active=(), steps=STEPS):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(PROMPT) + steps)
        self.generator = og.Generator(model, params)
        for name in active:
            self.generator.set_active_adapter(adapters, name)
        self.generator.append_tokens(np.array(PROMPT, dtype=np.int32))
        self.logits = []

    def step(self) -> bool:
        if self.generator.is_done():
            return False
        self.logits.append(self.generator.get_logits()[:, 0, :].copy())  # [1, V]
        self.generator.generate_next_token()
        return True

    def finish(self):
        while self.step():
            pass
        return [int(t) for t in self.generator.get_sequence(0)[len(PROMPT):]], np.concatenate(self.logits)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("active", SCENARIOS, ids=lambda active: "+".join(active) or "none")
@pytest.mark.parametrize("model_name", LORA_MODELS)
def test_adapters_give_the_peers_streams_and_logits(engine, model_name, active, lora_models, adapter_files):
    folder, files = lora_models[model_name], adapter_files[model_name]
    ours, theirs = (_run_alone(og, folder, files, active) for og in (engine, peer))
    assert_same_run(ours, theirs)


def _run_alone(og, folder, files: dict[str, str], active):
    model = _model(og, folder)
    return Stream(og, model, loaded_adapters(og, model, files), active).finish()


@pytest.mark.parametrize("model_name", LORA_MODELS)
def test_without_an_adapter_a_lora_model_is_its_base_and_an_adapter_changes_it(model_name, lora_models, text_models,
                                                                                adapter_files):
    lora_model = _model(peer, lora_models[model_name])
    base = Stream(peer, _model(peer, text_models[BASE_MODELS[model_name]])).finish()[0]
    assert Stream(peer, lora_model).finish()[0] == base
    adapters = loaded_adapters(peer, lora_model, adapter_files[model_name])
    streams = {name: Stream(peer, lora_model, adapters, [name]).finish()[0] for name in ("A", "B", "layers0")}
    assert len({tuple(stream) for stream in [base, *streams.values()]}) == 4, streams


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_generators_sharing_a_container_never_leak_adapters(engine, lora_models, adapter_files):
    """Four generators of one model and one container, stepped in turn, each equal to the peer's run alone."""
    folder, files = lora_models["llama-lora-fp32"], adapter_files["llama-lora-fp32"]
    model = _model(engine, folder)
    adapters = loaded_adapters(engine, model, files)
    plans = [("A",), (), ("B",), ("B", "A")]
    streams = [Stream(engine, model, adapters, active) for active in plans]
    while any([stream.step() for stream in streams]):
        pass
    peer_model = _model(peer, folder)
    peer_adapters = loaded_adapters(peer, peer_model, files)
    for stream, active in zip(streams, plans):
        assert_same_run(stream.finish(), Stream(peer, peer_model, peer_adapters, active).finish())
    del streams, stream
    # Once every generator is gone, a new one runs the base model again.
    assert_same_run(Stream(engine, model).finish(), Stream(peer, peer_model).finish())


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_an_adapter_activated_mid_generation_applies_from_the_next_run(engine, lora_models, adapter_files):
    folder, files = lora_models["llama-lora-fp32"], adapter_files["llama-lora-fp32"]
    runs = []
    for og in (engine, peer):
        model = _model(og, folder)
        adapters = loaded_adapters(og, model, files)
        stream = Stream(og, model, adapters)
        for _ in range(3):
            stream.step()
        stream.generator.set_active_adapter(adapters, "B")
        runs.append(stream.finish())
    assert_same_run(*runs)
    base = Stream(peer, _model(peer, folder)).finish()[0]
    assert runs[0][0][:3] == base[:3] and runs[0][0] != base


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_the_containers_rules_are_the_peers(engine, lora_models, adapter_files):
    """Each misuse fails on both, with gentwin's error naming the problem; state stays usable."""
    folder, path = lora_models["llama-lora-fp32"], adapter_files["llama-lora-fp32"]["A"]
    for og in (engine, peer):
        model = _model(og, folder)
        adapters = og.Adapters(model)
        adapters.load(path, "A")
        with pytest.raises(RuntimeError, match="already loaded"):
            adapters.load(path, "A")
        with pytest.raises(RuntimeError, match="not found|no adapter named 'nope'"):
            adapters.unload("nope")
        generator = og.Generator(model, og.GeneratorParams(model))
        with pytest.raises(RuntimeError, match="not found|no adapter named 'nope'"):
            generator.set_active_adapter(adapters, "nope")
        generator.set_active_adapter(adapters, "A")
        other = og.Adapters(model)
        other.load(path, "A")
        with pytest.raises(RuntimeError, match="single Adapters container"):
            generator.set_active_adapter(other, "A")
        with pytest.raises(RuntimeError, match="still in use"):
            adapters.unload("A")
        del generator  # in CPython the generator is gone at once, and with it the use
        adapters.unload("A")
        adapters.load(path, "A")  # the name is free again


def test_an_adapter_is_in_use_while_any_generator_that_activated_it_lives(lora_models, adapter_files):
    import gentwin.reference as og

    model = _model(og, lora_models["llama-lora-fp32"])
    adapters = loaded_adapters(og, model, adapter_files["llama-lora-fp32"])
    first, second = (og.Generator(model, og.GeneratorParams(model)) for _ in range(2))
    first.set_active_adapter(adapters, "A")
    second.set_active_adapter(adapters, "A")
    second.set_active_adapter(adapters, "A")  # twice: still one generator using it
    del first
    with pytest.raises(AdapterError, match=r"'A' is still in use by 1 generator"):
        adapters.unload("A")
    del second
    adapters.unload("A")
    adapters.unload("B")  # never activated
    with pytest.raises(TypeError, match="Adapters takes a Model"):
        og.Adapters("not a model")
    generator = og.Generator(model, og.GeneratorParams(model))
    with pytest.raises(TypeError, match="takes an Adapters"):
        generator.set_active_adapter("A", "A")


# -- files that do not fit the model ------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("fault, error", [
    ("unknown_name", r"has no input named 'not_an_input'"),
    ("wrong_dtype", r"takes float32, got float16"),
    ("wrong_shape", r"cannot take an array of shape \(63, 4\)"),
    ("generator_input", r"'attention_mask' is fed by the generator"),
])
def test_an_adapter_that_does_not_fit_the_model_is_refused_at_load(engine, fault, error, lora_models, tmp_path):
    """The peer accepts such a file and fails at the next run; gentwin refuses it when it is loaded."""
    folder = lora_models["llama-lora-fp32"]
    weights = random_lora_weights(str(folder), rank=4, seed=5)
    first = next(iter(weights))
    if fault == "unknown_name":
        weights["not_an_input"] = np.zeros(3, np.float32)
    elif fault == "wrong_dtype":
        weights[first] = weights[first].astype(np.float16)
    elif fault == "wrong_shape":
        weights[first] = weights[first][:-1]
    else:
        weights["attention_mask"] = np.ones((1, 4), np.int64)
    path = write_adapter_file(str(tmp_path / "bad.onnx_adapter"), weights)

    peer_model = _model(peer, folder)
    peer_adapters = loaded_adapters(peer, peer_model, {"bad": path})
    with pytest.raises(RuntimeError):
        Stream(peer, peer_model, peer_adapters, ["bad"])
    adapters = engine.Adapters(_model(engine, folder))
    with pytest.raises((ModelInputError, TypeError), match=error):
        adapters.load(path, "bad")
    with pytest.raises(AdapterError, match="no adapter named 'bad'"):
        adapters.unload("bad")


# -- the file reader ----------------------------------------------------------------------------------

DTYPES = [np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
          np.int64, np.uint64, np.bool_]


def test_the_reader_returns_what_onnxruntime_wrote_for_every_dtype_and_shape(tmp_path):
    rng = np.random.default_rng(0)
    shapes = [(3, 5), (7,), (2, 0, 4), (), (1, 1, 1, 9)]
    parameters = {}
    for i, dtype in enumerate(DTYPES):
        for j, shape in enumerate(shapes):
            values = rng.standard_normal(shape) * 100
            parameters[f"p{i}.{j}/ünïcode"] = np.asarray(values > 0 if dtype is np.bool_ else values, dtype=dtype)
    path = write_adapter_file(str(tmp_path / "all.onnx_adapter"), parameters, adapter_version=7, model_version=3)
    read = read_adapter_file(path)
    assert sorted(read) == sorted(parameters)
    for name, expected in parameters.items():
        assert read[name].dtype == expected.dtype and read[name].shape == expected.shape, name
        np.testing.assert_array_equal(read[name], expected)


def _valid_file(tmp_path) -> bytes:
    weights = {"x.lora_A.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "y": np.arange(3, dtype=np.int64)}
    with open(write_adapter_file(str(tmp_path / "valid.onnx_adapter"), weights), "rb") as adapter_file:
        return adapter_file.read()


def _read_bytes(tmp_path, data: bytes, name: str = "case.onnx_adapter"):
    path = tmp_path / name
    path.write_bytes(data)
    return read_adapter_file(path)


def test_every_truncation_of_a_file_is_refused_by_gentwin_and_the_peer(tmp_path, lora_models):
    data = _valid_file(tmp_path)
    peer_adapters = peer.Adapters(_model(peer, lora_models["llama-lora-fp32"]))
    for length in range(len(data)):
        with pytest.raises(AdapterError, match="not a valid onnxruntime adapter file"):
            _read_bytes(tmp_path, data[:length])
        if length % 16 == 0:
            with pytest.raises(RuntimeError):
                peer_adapters.load(str(tmp_path / "case.onnx_adapter"), f"cut{length}")


def test_a_corrupted_file_reads_or_raises_adapter_error_never_anything_else(tmp_path):
    data = _valid_file(tmp_path)
    rng = np.random.default_rng(1)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(400):
        corrupt = bytearray(data)
        for position in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
            corrupt[position] = int(rng.integers(0, 256))
        try:
            _read_bytes(tmp_path, bytes(corrupt))
            outcomes["read"] += 1
        except AdapterError:
            outcomes["refused"] += 1
    assert outcomes["read"] and outcomes["refused"], outcomes


def test_an_unsupported_format_version_and_a_missing_file_are_refused(tmp_path, lora_models):
    data = bytearray(_valid_file(tmp_path))
    buffer = gentwin_adapters._FlatBuffer(bytes(data), "valid")
    root = gentwin_adapters._Table(buffer, buffer.follow(0))
    struct.pack_into("<i", data, root.position + root.field_offsets[0], 2)
    with pytest.raises(AdapterError, match="format version 2 is not the supported version 1"):
        _read_bytes(tmp_path, bytes(data), "v2.onnx_adapter")
    with pytest.raises(RuntimeError):
        peer.Adapters(_model(peer, lora_models["llama-lora-fp32"])).load(str(tmp_path / "v2.onnx_adapter"), "v2")
    with pytest.raises(AdapterError, match="cannot read adapter file .*missing.onnx_adapter"):
        read_adapter_file(tmp_path / "missing.onnx_adapter")
    data[4:8] = b"XXXX"
    with pytest.raises(AdapterError, match="does not carry the identifier TORT"):
        _read_bytes(tmp_path, bytes(data))


def test_the_reference_reads_adapters_without_onnxruntime(lora_models, adapter_files):
    script = (
        "import sys\n"
        "import numpy as np\n"
        "import gentwin.reference as og\n"
        f"model = og.Model({str(lora_models['llama-lora-fp32'])!r})\n"
        "adapters = og.Adapters(model)\n"
        f"adapters.load({adapter_files['llama-lora-fp32']['A']!r}, 'A')\n"
        "generator = og.Generator(model, og.GeneratorParams(model))\n"
        "generator.set_active_adapter(adapters, 'A')\n"
        "generator.append_tokens(np.array([5, 17, 42], dtype=np.int32))\n"
        "generator.generate_next_token()\n"
        "assert not [name for name in sys.modules if name.startswith('onnxruntime')], 'onnxruntime was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
