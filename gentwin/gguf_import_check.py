"""Dev only: gentwin's GGUF import against the official route, transformers' GGUF loader then
`onnxruntime_genai.models.builder`. Needs torch and transformers, which gentwin never depends on:

    gentwin import-gguf FILE.gguf OURS [--precision int4]                 # in gentwin's venv
    python -m gentwin.gguf_import_check FILE.gguf OURS WORK [fp32|int4]   # in a venv with torch, transformers, gguf

It loads FILE.gguf with transformers, saves it with its tokenizer into WORK/hf, builds WORK/official-PRECISION
with the builder (CPU), then compares:

* the graphs: nodes (operator, inputs, attributes) and initializers (bytes), name by name;
* the logits of both model.onnx on the same prompts, run by onnxruntime, relative to each row's largest logit;
* the token ids of OURS/tokenizer.json with transformers' GGUF tokenizer's, on a varied corpus;
* the chat template text of OURS/tokenizer_config.json with transformers' apply_chat_template.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

CORPUS = [
    "What is the capital of France?",
    "Hello, world! 1234567890 3.14159",
    "  leading spaces,\ttabs\t\tand\n\nnewlines   \n",
    "Unicode: café, naïve, Straße, Ελληνικά, русский, 日本語, 中文, 한국어",
    "Emoji: 👋🏽 🇫🇷 👨‍👩‍👧 ❤️",
    "def f(x):\n    return x ** 2  # square\n",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "don't won't it's we'll they've I'm",
    "",
]
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Tell me a joke."}],
]


def official_build(gguf_path: Path, work: Path, precision: str) -> Path:
    official = work / f"official-{precision}"
    if (official / "model.onnx").exists():
        return official
    hf = work / "hf"
    if not (hf / "config.json").exists():
        save_as_transformers(gguf_path, hf)
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(official),
                    "-p", precision, "-e", "cpu", "-c", str(work / "cache")], check=True)
    return official


def save_as_transformers(gguf_path: Path, hf: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name}
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), **kwargs)
    # transformers will not save a model it loaded from GGUF: the same weights in a plain model of that config.
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(gguf_path.parent), **kwargs))
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(hf)
    AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs).save_pretrained(hf)


def compare_graphs(ours: Path, official: Path) -> None:
    import onnx
    from onnx import numpy_helper

    graphs = [onnx.load(str(folder / "model.onnx")).graph for folder in (ours, official)]
    nodes = [{node.name: (node.op_type, list(node.input), {a.name: onnx.helper.get_attribute_value(a)
                                                             for a in node.attribute}) for node in graph.node}
             for graph in graphs]
    weights = [{t.name: numpy_helper.to_array(t) for t in graph.initializer} for graph in graphs]
    for what, ours_items, theirs_items, same in (
            ("nodes", *nodes, lambda a, b: a == b),
            ("initializers", *weights, lambda a, b: a.dtype == b.dtype and np.array_equal(a, b))):
        names = set(ours_items) | set(theirs_items)
        differ = sorted(n for n in names if n not in ours_items or n not in theirs_items
                        or not same(ours_items[n], theirs_items[n]))
        print(f"{what}: {len(names) - len(differ)} of {len(names)} the same; differ: {differ[:8]}")
        for name in differ[:8]:
            if what == "initializers" and name in ours_items and name in theirs_items:
                difference = np.abs(ours_items[name].astype(np.float64) - theirs_items[name].astype(np.float64))
                print(f"  {name}: up to {difference.max():.2g} apart")


def logits(folder: Path, input_ids: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    decoder = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    feeds = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
    for layer in range(decoder["num_hidden_layers"]):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{layer}.{kind}"] = np.zeros(
                (1, decoder["num_key_value_heads"], 0, decoder["head_size"]), np.float32)
    return session.run(["logits"], feeds)[0]


def main(argv=None) -> int:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    args = argv or sys.argv[1:]
    gguf_path, ours, work = (Path(arg).resolve() for arg in args[:3])
    official = official_build(gguf_path, work, args[3] if len(args) > 3 else "fp32")
    compare_graphs(ours, official)
    theirs_tokenizer = AutoTokenizer.from_pretrained(str(work / "hf"))
    our_tokenizer = Tokenizer.from_file(str(ours / "tokenizer.json"))
    worst = 0.0
    for text in CORPUS:
        expected = theirs_tokenizer(text, add_special_tokens=False)["input_ids"]
        got = our_tokenizer.encode(text, add_special_tokens=False).ids
        print(f"tokens {'same' if got == expected else 'DIFFER'}: {text!r}")
        if not expected:
            continue
        input_ids = np.array([expected], np.int64)
        ours_logits, theirs_logits = logits(ours, input_ids), logits(official, input_ids)
        error = np.abs(ours_logits - theirs_logits).max(-1) / np.maximum(1.0, np.abs(theirs_logits).max(-1))
        worst = max(worst, float(error.max()))
        print(f"  logits: max relative difference {error.max():.2e} over {input_ids.shape[1]} positions")
    template = json.loads((ours / "tokenizer_config.json").read_text())["chat_template"]
    import jinja2

    for chat in CHATS:
        expected = theirs_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        got = jinja2.Environment().from_string(template).render(messages=chat, add_generation_prompt=True)
        print(f"chat template {'same' if got == expected else 'DIFFERS'}: {len(chat)} messages")
    print(f"largest relative logit difference: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
