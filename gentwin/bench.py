"""`make bench`: time-to-first-token and decode speed of each engine next to onnxruntime-genai's, in one run.

Runs greedy batch-1 generation on the bench-size fixtures (about 25M parameters, 8 layers, GQA; fp32 and
int4), built into bench-models/ on first use. The engines take turns, one generation each per round, and each
figure is the median over the rounds: ratios are against the peer measured in the same rounds, so a noisy
moment of the machine (they are shared, and noisy) weighs on every engine alike.

gentwin.fast takes onnxruntime's default thread pool (one intra-op thread per physical core) unless
genai_config.json says otherwise. The peer sets intra_op_num_threads to half the logical CPUs (its
CreateSessionOptionsFromConfig assumes two hardware threads per core): one thread on a 2-vCPU machine whose
vCPUs are separate cores. So each model also gets a row for gentwin.fast with `intra_op_num_threads` 1 in its
session_options: engine against engine, threads equal.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH_MODELS = REPO / "bench-models"
PEER = "onnxruntime_genai"
# onnxruntime's and numpy's worker threads spin a while after a run; an engine starting at once shares the
# cores with them (measured: the reference's prefill right after gentwin.fast's decode took twice as long)
PAUSE_BETWEEN_TURNS = 0.1


def ensure_bench_models() -> list[Path]:
    if not any(BENCH_MODELS.glob("*/genai_config.json")):
        subprocess.run([sys.executable, "-m", "gentwin.fixtures.build", "--size", "bench", "--out", str(BENCH_MODELS)],
                       check=True)
    return sorted(p.parent for p in BENCH_MODELS.glob("*/genai_config.json"))


def time_one_generation(og, model, prompt: np.ndarray, new_tokens: int) -> tuple[float, float]:
    """Seconds to the first generated token, and decode tokens per second after it."""
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=prompt.shape[1] + new_tokens + 1)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(prompt)
    generator.generate_next_token()
    first = time.perf_counter()
    for _ in range(new_tokens - 1):
        generator.generate_next_token()
    end = time.perf_counter()
    return first - start, (new_tokens - 1) / (end - first)


def measure_interleaved(engines: dict, prompt_length: int, new_tokens: int, repeats: int) -> dict:
    """TTFT (ms) and decode speed (tok/s) of each engine, ENGINES {label: (module name, model folder)}.

    Every engine runs once per round, in turn, so a slow moment of the machine falls on all of them alike;
    each figure is the median over the rounds, after one warm-up run each (first-run allocations, caches)."""
    prompt = np.random.default_rng(0).integers(3, 500, size=(1, prompt_length)).astype(np.int32)
    loaded = {}
    for label, (module_name, model_dir) in engines.items():
        og = importlib.import_module(module_name)
        loaded[label] = og, og.Model(str(model_dir))
        time_one_generation(*loaded[label], prompt, 4)
    runs = {label: [] for label in engines}
    for _ in range(repeats):
        for label, (og, model) in loaded.items():
            time.sleep(PAUSE_BETWEEN_TURNS)
            runs[label].append(time_one_generation(og, model, prompt, new_tokens))
    return {label: {"ttft_ms": 1000 * statistics.median(r[0] for r in timings),
                    "decode_tps": statistics.median(r[1] for r in timings)}
            for label, timings in runs.items()}


def long_system_prompt(tokenizer, tokens: int) -> str:
    """A system prompt of about TOKENS tokens."""
    rules, text = 0, ""
    while len(tokenizer.encode(text)) < tokens:
        rules += 1
        text += f"Rule {rules}: answer in plain words, and keep to the point. "
    return text


def shared_system_prompt_ttft(engine: str, model_dir: Path, system_tokens: int, repeats: int) -> tuple[float, float]:
    """Median seconds to the first token of two gentwin.chat chats sharing a long system prompt, each pair on a
    fresh Client: the first chat prefills the system prompt, the second restores it from the prefix cache."""
    from gentwin.chat import Client

    firsts, seconds = [], []
    for _ in range(repeats + 1):  # the first pair warms up
        client = Client(model_dir, engine.removeprefix("gentwin."))
        system = {"role": "system", "content": long_system_prompt(client.tokenizer, system_tokens)}
        times = []
        for question in ("What is gentwin?", "How fast is it?"):
            start = time.perf_counter()
            client.chat([system, {"role": "user", "content": question}], max_tokens=1, temperature=0)
            times.append(time.perf_counter() - start)
        firsts.append(times[0])
        seconds.append(times[1])
    return statistics.median(firsts[1:]), statistics.median(seconds[1:])


@contextlib.contextmanager
def single_threaded(model_dir: Path):
    """MODEL_DIR's model with intra_op_num_threads 1 in its session options: a temporary folder of links."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / model_dir.name
        copy.mkdir()
        for item in model_dir.iterdir():
            if item.name != "genai_config.json":
                (copy / item.name).symlink_to(item.resolve())
        config = json.loads((model_dir / "genai_config.json").read_text())
        config["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = 1
        (copy / "genai_config.json").write_text(json.dumps(config))
        yield copy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engines", nargs="+", default=["gentwin.fast", "gentwin.reference"])
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--system-tokens", type=int, default=1024, help="system prompt of the chat TTFT table")
    args = parser.parse_args(argv)

    print(f"prompt {args.prompt_length} tokens, {args.new_tokens} new tokens, greedy, batch 1, "
          f"engines in turn, median of {args.repeats} rounds\n")
    print(f"{'model':<18} {'engine':<22} {'TTFT ms':>7} {'decode tok/s':>13} {'TTFT/peer':>10} {'decode/peer':>12}")
    for model_dir in ensure_bench_models():
        with single_threaded(model_dir) as one_thread:
            engines = {PEER: (PEER, model_dir), **{engine: (engine, model_dir) for engine in args.engines}}
            if "gentwin.fast" in args.engines:
                engines["gentwin.fast 1 thread"] = ("gentwin.fast", one_thread)
            rows = measure_interleaved(engines, args.prompt_length, args.new_tokens, args.repeats)
        peer = rows[PEER]
        for engine, row in rows.items():
            print(f"{model_dir.name:<18} {engine:<22} {row['ttft_ms']:7.2f} {row['decode_tps']:13.1f} "
                  f"{row['ttft_ms'] / peer['ttft_ms']:10.2f}x {row['decode_tps'] / peer['decode_tps']:11.2f}x",
                  flush=True)

    print(f"\ntwo chats sharing a {args.system_tokens}-token system prompt (gentwin.chat): TTFT of each, "
          f"median of {args.repeats} pairs; target second/first <= 0.3\n")
    print(f"{'model':<18} {'engine':<20} {'first ms':>9} {'second ms':>10} {'second/first':>13}")
    for model_dir in ensure_bench_models():
        for engine in args.engines:
            first, second = shared_system_prompt_ttft(engine, model_dir, args.system_tokens, args.repeats)
            print(f"{model_dir.name:<18} {engine:<20} {1000 * first:9.2f} {1000 * second:10.2f} "
                  f"{second / first:12.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
