"""The models the peer's CI downloads and converts before its Python tests run, stood in for by random-weight
checkpoints of the same families, built the way its CI builds them (test/python/_test_utils.py: the official
builder, int4 on the CPU with include_hidden_states=1 and accuracy_level=4).

A stand-in keeps what the tests read off the model — the vocabulary size (test_adapters adds a [51200] tensor
to phi-2's logits), the hidden size (test_hidden_states wants 896 for qwen2.5-0.5b), the special token ids
(test_e2e wants 50256 for phi-2) and the tokenizer (the peer's own test models ship phi-2's and phi-3's) — and
shrinks the rest to one small layer. Nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tools.sweep.catalogue import Family

# What the peer's CI passes the builder for a CPU int4 model (download_model in test/python/_test_utils.py).
CI_OPTIONS = ("include_hidden_states=1", "hf_token=0", "hf_remote=0", "accuracy_level=4")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt")
BUILD_SECONDS = 900


@dataclass(frozen=True)
class StandIn:
    family: Family
    folder: str               # where the peer's conftest looks, under --test_models
    tokenizer_from: str = ""  # a folder of the peer's test/models whose tokenizer it ships ("": the fixture's)

    @property
    def top(self) -> str:
        return self.folder.split("/")[0]


ONE_LAYER = {"num_hidden_layers": 1, "tie_word_embeddings": False}

STANDINS = [
    # phi-2: GPT-2's byte-level BPE (the peer's pipeline-model ships phi-2's tokenizer), 51200 logits,
    # partial rotary; heads of 32 so that GQA's rotary takes the half rotary dimension.
    StandIn(Family("phi-2", "phi", {**ONE_LAYER, "vocab_size": 51200, "bos_token_id": 50256, "eos_token_id": 50256,
                                    "pad_token_id": 50256, "hidden_size": 128, "intermediate_size": 256,
                                    "num_key_value_heads": 4, "head_dim": 32, "partial_rotary_factor": 0.5}),
            "phi-2/int4/cpu", "pipeline-model"),
    # phi-3-mini: the Llama sentencepiece vocabulary with phi-3's chat template (the peer's phi3-v ships it).
    StandIn(Family("phi-3-mini", "phi3", {**ONE_LAYER, "vocab_size": 32064, "bos_token_id": 1, "eos_token_id": 32000,
                                          "pad_token_id": 32000, "original_max_position_embeddings": 256}),
            "phi-3-mini/int4/cpu", "phi3-v"),
    # qwen2.5-0.5b: its hidden size (896, 14 heads of 64, GQA 7:1) and tied embeddings; no test decodes text.
    StandIn(Family("qwen-2.5-0.5b", "qwen2", {**ONE_LAYER, "tie_word_embeddings": True, "hidden_size": 896,
                                              "num_attention_heads": 14, "num_key_value_heads": 2, "head_dim": 64}),
            "qwen-2.5-0.5b/int4/cpu"),
]


def tokenizer_files(standin: StandIn, peer_models: Path) -> tuple[Path, ...]:
    """The tokenizer files the stand-in ships: those of the peer's test model it names, or () for the fixture's."""
    if not standin.tokenizer_from:
        return ()
    folder = peer_models / standin.tokenizer_from
    files = tuple(folder / name for name in TOKENIZER_FILES if (folder / name).is_file())
    if not any(path.name == "tokenizer.json" for path in files):
        raise FileNotFoundError(f"{folder} has no tokenizer.json for the {standin.family.name} stand-in")
    return files


def build_standin(standin: StandIn, root: Path, peer_models: Path) -> str:
    """Build STANDIN into ROOT/FOLDER unless it is there; return what happened, in a word or a line."""
    from tools.sweep.build import hf_folder  # needs torch and transformers: only when something is built

    out = root / standin.folder
    if (out / "genai_config.json").is_file():
        return "cached"
    source = hf_folder(standin.family, root, tokenizer_files(standin, peer_models))
    cache = root / "cache" / standin.family.name
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out),
               "-p", "int4", "-e", "cpu", "-c", str(cache), "--extra_options", *CI_OPTIONS]
    log = root / "logs" / f"{standin.family.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("w") as handle:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=BUILD_SECONDS).returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    shutil.rmtree(cache, ignore_errors=True)
    if code == 0 and (out / "genai_config.json").is_file():
        return "built"
    shutil.rmtree(out, ignore_errors=True)
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return f"failed (builder exit {code}): {lines[-1] if lines else 'no output'}"


def build_all(root: Path, peer_models: Path) -> None:
    for index, standin in enumerate(STANDINS, 1):
        started = time.perf_counter()
        outcome = build_standin(standin, root, peer_models)
        print(f"[{index}/{len(STANDINS)}] {standin.folder:<28} {outcome}  {time.perf_counter() - started:.0f}s",
              flush=True)
