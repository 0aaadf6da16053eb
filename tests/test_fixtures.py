"""The committed fixtures: the peer runs them, they rebuild byte for byte, their tokenizer agrees with the peer's."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gentwin.fixtures.build import MODELS_DIR
from gentwin.fixtures.layouts import FIXTURES
from gentwin.fixtures.quantize import quantize_4bit
from tests.helpers import env_with_stub_packages

og = pytest.importorskip("onnxruntime_genai")

NAMES = sorted(FIXTURES)
PROMPTS = [
    "The model is small.",
    "Tests should be quick, and nobody waits",
    "中文 🙂",
    "How does greedy search work?",
]
STEPS = 20
# Text the peer's tokenizer is asked to reproduce. It leaves out the two places where the peer is known to
# differ: it stops at a NUL character, and decodes a run of nothing but special tokens to "\ufffd", not "".
TOKENIZER_SAMPLES = [
    "Hello world, héllo 中文 🙂 123.",
    " leading space, trailing space ",
    "tabs\tand\nnewlines  double  space\r\n",
    "<s><|user|>\nHi there!<|end|>\n<|assistant|>\n",
    "ありがとう 한국어 €£ ¿qué? Größe naïve 👍🏽",
    "Numbers: 3.14, 1e-6, 2024-06-01, v0.18.0, $19.99, [1, 2, 3]",
    "don't WON'T we'll I'M it's",
    "x",
]
MODEL_BUDGET_BYTES = 5 * 1024 * 1024


@pytest.fixture(scope="module", params=NAMES)
def peer_model(request):
    path = os.path.join(MODELS_DIR, request.param)
    return request.param, path, og.Model(path)


def _greedy(model, pad_token_id: int, prompts: list[list[int]]) -> list[list[int]]:
    """Greedy streams of STEPS tokens. The peer takes a batch right-padded: it treats trailing pad tokens as
    padding and leading ones as text."""
    width = max(len(p) for p in prompts)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=width + STEPS, do_sample=False, batch_size=len(prompts))
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([p + [pad_token_id] * (width - len(p)) for p in prompts], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    return [[int(t) for t in generator.get_sequence(i)][width:] for i in range(len(prompts))]


def test_the_committed_set_is_the_table_and_fits_the_budget():
    assert sorted(os.listdir(MODELS_DIR)) == NAMES
    total = sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(MODELS_DIR) for f in files)
    assert total < MODEL_BUDGET_BYTES


def test_the_peer_generates_varied_greedy_streams(peer_model):
    name, path, model = peer_model
    with open(os.path.join(path, "genai_config.json"), encoding="utf-8") as config_file:
        pad_token_id = json.load(config_file)["model"]["pad_token_id"]
    tokenizer = og.Tokenizer(model)
    prompts = [[int(t) for t in tokenizer.encode(text)] for text in PROMPTS]
    streams = [_greedy(model, pad_token_id, [prompt])[0] for prompt in prompts]
    assert all(len(stream) == STEPS for stream in streams), name
    assert len({tuple(stream) for stream in streams}) == len(streams), f"{name}: prompts give the same stream"
    assert sum(len(set(stream)) >= 5 for stream in streams) >= 3, f"{name}: degenerate streams {streams}"
    short, long = sorted(prompts[:2], key=len)
    assert len(short) < len(long)
    assert _greedy(model, pad_token_id, [short, long]) == [streams[prompts.index(short)], streams[prompts.index(long)]]


def test_the_peers_tokenizer_agrees_with_tokenizers(peer_model):
    from tokenizers import Tokenizer

    name, path, model = peer_model
    peer = og.Tokenizer(model)
    ours = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    for text in TOKENIZER_SAMPLES:
        ids = ours.encode(text).ids
        assert [int(t) for t in peer.encode(text)] == ids, (name, text)
        assert peer.decode(ids) == ours.decode(ids), (name, text)
        stream = peer.create_stream()
        assert "".join(stream.decode(t) for t in ids) == ours.decode(ids), (name, text)


def test_the_peer_renders_the_chat_template_as_jinja2_does(peer_model):
    import jinja2

    name, path, model = peer_model
    with open(os.path.join(path, "tokenizer_config.json"), encoding="utf-8") as config_file:
        config = json.load(config_file)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Héllo 🙂?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "Again"},
    ]
    expected = jinja2.Environment().from_string(config["chat_template"]).render(
        messages=messages, add_generation_prompt=True, bos_token=config["bos_token"], eos_token=config["eos_token"]
    )
    assert og.Tokenizer(model).apply_chat_template(json.dumps(messages), add_generation_prompt=True) == expected


def test_rebuilding_gives_the_same_bytes_and_never_imports_torch(tmp_path):
    env = env_with_stub_packages(tmp_path / "stubs", "torch")
    stub = str(tmp_path / "stubs" / "torch" / "__init__.py")
    out = tmp_path / "models"
    script = (
        "import sys\n"
        "from gentwin.fixtures.build import build\n"
        f"build({str(out)!r})\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert [m for m in sys.modules if m.startswith('gentwin.fixtures.')], 'nothing was imported'\n"
        "import torch\n"
        f"assert torch.__file__ == {stub!r}, 'the stand-in torch is not the one an import gets'\n"
    )
    # A stand-in torch is importable, so even a guarded `try: import torch` would show in sys.modules.
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    for name in NAMES:
        committed, rebuilt = os.path.join(MODELS_DIR, name), os.path.join(out, name)
        assert sorted(os.listdir(rebuilt)) == sorted(os.listdir(committed)), name
        _, mismatch, errors = filecmp.cmpfiles(committed, rebuilt, os.listdir(committed), shallow=False)
        assert not mismatch and not errors, (name, mismatch, errors)


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "asymmetric"])
def test_the_numpy_quantizer_matches_onnxruntimes(symmetric):
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits

    rng = np.random.default_rng(0)
    block_size = 32
    for trial in range(40):
        k, n = block_size * int(rng.integers(1, 5)), int(rng.integers(1, 24))
        weight = rng.standard_normal((k, n), dtype=np.float32) * np.float32(rng.uniform(0.001, 3.0))
        if trial % 4 == 1:
            weight[:block_size, 0] = 0  # a block of zeros
        if trial % 4 == 2:
            weight = np.round(weight * 4) / 4  # exact halves after scaling, to pin down rounding
        blocks = k // block_size
        packed = np.zeros((n, blocks, block_size // 2), np.uint8)
        scales = np.zeros((n, blocks), np.float32)
        zero_points = np.zeros((n, (blocks + 1) // 2), np.uint8)
        quantize_matmul_4bits(packed, weight, scales, zero_points, block_size, n, k, symmetric)
        ours = quantize_4bit(weight, block_size, symmetric)
        assert np.array_equal(ours.packed, packed)
        assert np.array_equal(ours.scales.view(np.uint32), scales.view(np.uint32))
        assert (ours.zero_points is None) if symmetric else np.array_equal(ours.zero_points, zero_points)
