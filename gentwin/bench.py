"""`make bench`: time to first token, decode speed and peak memory of each engine next to onnxruntime-genai's,
on an idle machine and on a busy one, in one run.

Models: the bench-size fixtures (about 25M parameters, 8 layers, GQA; fp32 and int4), built into bench-models/
on first use, and a real model, SmolLM2-135M-Instruct, imported from its GGUF file into the cache on first use
(fp32 and int4, as `make demo` does). Greedy, batch 1.

How it measures:
- every engine runs in its own subprocess (a worker), loaded once per model, so its peak RSS is its own;
- the engines take turns, one generation each per round, with a pause between turns, and each figure is the
  median over the rounds, so a noisy moment of the machine (they are shared, and noisy) weighs on every
  engine alike; ratios are against the peer measured in the same rounds;
- "busy": the same rounds again while a process the bench starts (and stops) spins on one core, as a CI job
  or a second request would;
- besides the engines at their defaults, gentwin.fast with one intra-op thread per logical CPU (where that
  is more than the peer's half of them), with onnxruntime's spinning workers and without: what more threads
  give on an idle machine and cost on a busy one;
- then speculative decoding on SmolLM2 fp32 (idle, one worker per engine): no drafts, n-gram drafts and
  drafts from SmolLM2 int4 as a draft model, on a prompt whose answer repeats (code quoted back) and on one
  whose answer does not (a story), each engine with the same options, in turn; decode tokens/s, the share of
  drafts accepted, and the ratios to the engine without drafts and to the peer with the same drafting
  (`--no-speculative` leaves it out; gentwin.reference generates a quarter of the tokens);
- last, gentwin.fast's host work per token (everything but the session run, in CPU time of the calling
  thread, one intra-op thread), on a fixture whose session run takes almost nothing.

`--quick` runs it all on the smallest fixtures in seconds (the test of this file; llama-int4 drafts there). The plot (matplotlib)
shows decode tokens/s per model, condition and engine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH_MODELS = REPO / "bench-models"
QUICK_MODEL = REPO / "fixtures" / "models" / "llama-fp32"
QUICK_DRAFT = REPO / "fixtures" / "models" / "llama-int4"
DEFAULT_PLOT = REPO / "docs" / "bench.png"
PEER = "onnxruntime_genai"
ENGINES = [PEER, "gentwin.fast", "gentwin.reference"]
CONDITIONS = ("idle", "busy")
# onnxruntime's and numpy's worker threads spin a while after a run; an engine starting at once shares the
# cores with them (measured: the reference's prefill right after gentwin.fast's decode took twice as long)
PAUSE_BETWEEN_TURNS = 0.1
NO_SPINNING = {"session.intra_op.allow_spinning": "0"}  # waiting workers sleep rather than spin
# One core kept busy until the bench stops it, or, should the bench die first, until it is orphaned
SPIN_ONE_CORE = """
import os, sys
while os.getppid() == int(sys.argv[1]):
    for _ in range(10**6):
        pass
"""


# -- the worker: one engine, one model, in its own process ---------------------------------------------------


def time_one_generation(og, model, prompt: np.ndarray, new_tokens: int, speculative: dict | None = None) -> dict:
    """Seconds to the first generated token (ttft_s), and decode tokens per second after it (decode_tps, up to
    NEW_TOKENS, fewer if the model ends the sequence); with SPECULATIVE options (a dict, empty or not: a model
    with a draft drafts without any), also the share of the draft tokens judged that the target accepted
    (acceptance)."""
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=prompt.shape[1] + new_tokens + 1)
    if speculative:
        params.set_speculative_options(**speculative)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(prompt)
    generator.generate_next_token()
    first = time.perf_counter()
    decoded = 0
    while decoded < new_tokens - 1 and not generator.is_done():
        generator.generate_next_token()
        decoded += 1
    end = time.perf_counter()
    timing = {"ttft_s": first - start, "decode_tps": decoded / (end - first) if decoded else float("nan")}
    if speculative is not None:
        timing["acceptance"] = generator.get_speculative_stats()["acceptance_rate"]
    return timing


def serve(engine: str, model_dir: str, prompt_length: int, new_tokens: int, draft_dir: str | None) -> None:
    """The worker's loop: load the model (and DRAFT_DIR's, the model with a draft, for the speculative rows),
    say "ready", then time one generation for every "run" line on stdin: of the bench's random prompt, or, for
    "run" and a JSON request, of its text with its drafting (see `speculative_rows`); on "quit", report the
    process's peak resident memory."""
    og = importlib.import_module(engine)
    models = {"none": og.Model(model_dir)}
    if draft_dir:
        models["n-gram"], models["draft model"] = models["none"], og.Model(draft_dir)
    prompt = np.random.default_rng(0).integers(3, 500, size=(1, prompt_length)).astype(np.int32)
    for drafting, model in models.items():  # first-run allocations and caches
        time_one_generation(og, model, prompt, 4, SPECULATIVE_OPTIONS.get(drafting))
    tokenizer = og.Tokenizer(models["none"])
    context_length = json.loads((Path(model_dir) / "genai_config.json").read_text())["model"]["context_length"]
    reply({"ready": True})
    for command in sys.stdin:
        verb, _, request = command.strip().partition(" ")
        if verb != "run":
            break
        if not request:
            reply(time_one_generation(og, models["none"], prompt, new_tokens))
            continue
        request = json.loads(request)
        room = context_length - request["new_tokens"] - 1  # the fixtures' contexts are short: the text's end
        tokens = np.asarray(tokenizer.encode(request["text"]), dtype=np.int32)[None, -room:]   # [1, S]
        reply(time_one_generation(og, models[request["drafting"]], tokens, request["new_tokens"],
                                  SPECULATIVE_OPTIONS.get(request["drafting"])))
    reply({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})  # Linux: KiB


def reply(message: dict) -> None:
    print(json.dumps(message), flush=True)


class Worker:
    """A worker subprocess for ENGINE on MODEL_DIR, driven over its stdin and stdout."""

    def __init__(self, engine: str, model_dir: Path, prompt_length: int, new_tokens: int,
                 draft_dir: Path | None = None):
        draft = ["--draft-model", str(draft_dir)] if draft_dir else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gentwin.bench", "--worker", engine, str(model_dir), *draft,
             "--prompt-length", str(prompt_length), "--new-tokens", str(new_tokens)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)

    def receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"bench worker {self.process.args[3:5]} exited with {self.process.wait()}")
        return json.loads(line)

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def run(self, request: dict | None = None) -> dict:
        self.send("run" if request is None else "run " + json.dumps(request))
        return self.receive()

    def quit(self) -> float:
        self.send("quit")
        peak = self.receive()["peak_rss_mb"]
        self.process.wait()
        return peak


# -- the parent: models, conditions, rounds ------------------------------------------------------------------


def ensure_bench_models() -> list[Path]:
    if not any(BENCH_MODELS.glob("*/genai_config.json")):
        subprocess.run([sys.executable, "-m", "gentwin.fixtures.build", "--size", "bench", "--out", str(BENCH_MODELS)],
                       check=True)
    return sorted(p.parent for p in BENCH_MODELS.glob("*/genai_config.json"))


def real_models() -> list[Path]:
    """SmolLM2-135M-Instruct fp32 and int4, imported from the GGUF file on first use."""
    from gentwin.cli import progress_bar
    from gentwin.gguf_import import default_model

    return [default_model(precision, progress=progress_bar) for precision in ("fp32", "int4")]


@contextlib.contextmanager
def with_session_options(model_dir: Path, **options):
    """MODEL_DIR's model with OPTIONS added to its session options: a temporary folder of links."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / model_dir.name
        copy.mkdir()
        for item in model_dir.iterdir():
            if item.name != "genai_config.json":
                (copy / item.name).symlink_to(item.resolve())
        config = json.loads((model_dir / "genai_config.json").read_text())
        config["model"]["decoder"].setdefault("session_options", {}).update(options)
        (copy / "genai_config.json").write_text(json.dumps(config))
        yield copy


@contextlib.contextmanager
def competing_load(condition: str):
    """Nothing when idle; when busy, a process spinning on one core until the block ends."""
    if condition == "idle":
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", SPIN_ONE_CORE, str(os.getpid())])
    try:
        time.sleep(0.5)  # let the scheduler see it
        yield
    finally:
        spinner.kill()
        spinner.wait()


def measure_model(model_dir: Path, engines: list[str], rounds: int, prompt_length: int, new_tokens: int) -> list[dict]:
    """One row per condition and engine label: medians of ROUNDS alternating generations, and peak RSS."""
    from gentwin.threads import peer_intra_op_threads

    all_threads = os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        folders = {engine: (engine, model_dir) for engine in engines}
        if "gentwin.fast" in engines and all_threads > peer_intra_op_threads():
            for label, spinning in ((f"gentwin.fast, {all_threads} threads", {}),
                                    (f"gentwin.fast, {all_threads} threads, no spinning", NO_SPINNING)):
                folder = with_session_options(model_dir, intra_op_num_threads=all_threads, **spinning)
                folders[label] = ("gentwin.fast", stack.enter_context(folder))
        workers = {label: Worker(engine, folder, prompt_length, new_tokens) for label, (engine, folder) in folders.items()}
        try:
            for worker in workers.values():
                worker.receive()  # ready: loaded and warmed up
            runs = {(condition, label): [] for condition in CONDITIONS for label in workers}
            for condition in CONDITIONS:
                with competing_load(condition):
                    for _ in range(rounds):
                        for label, worker in workers.items():
                            time.sleep(PAUSE_BETWEEN_TURNS)
                            runs[condition, label].append(worker.run())
        finally:
            peaks = {label: worker.quit() for label, worker in workers.items()}
    return [{"model": model_dir.name, "condition": condition, "engine": label,
             "ttft_ms": 1000 * statistics.median(run["ttft_s"] for run in timings),
             "decode_tps": statistics.median(run["decode_tps"] for run in timings),
             "peak_rss_mb": peaks[label]}
            for (condition, label), timings in runs.items()]


def with_ratios(rows: list[dict]) -> list[dict]:
    """ROWS with ttft_vs_peer and decode_vs_peer, against the peer's row of the same model and condition."""
    peer = {(row["model"], row["condition"]): row for row in rows if row["engine"] == PEER}
    for row in rows:
        base = peer.get((row["model"], row["condition"]))
        row["ttft_vs_peer"] = row["ttft_ms"] / base["ttft_ms"] if base else float("nan")
        row["decode_vs_peer"] = row["decode_tps"] / base["decode_tps"] if base else float("nan")
    return rows


COLUMNS = [("model", "model", "{}"), ("condition", "condition", "{}"), ("engine", "engine", "{}"),
           ("ttft_ms", "TTFT ms", "{:.1f}"), ("decode_tps", "decode tok/s", "{:.1f}"),
           ("peak_rss_mb", "peak RSS MB", "{:.0f}"), ("ttft_vs_peer", "TTFT/peer", "{:.2f}x"),
           ("decode_vs_peer", "decode/peer", "{:.2f}x")]


def table(rows: list[dict]) -> str:
    """ROWS as one Markdown table."""
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(form.format(row[key]) for key, _, form in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def tick_label(model: str) -> str:
    """A model folder's name in two short lines: bench-llama-fp32 -> bench\nllama-fp32."""
    family, _, rest = model.replace("-Instruct", "").partition("-")
    return f"{family}\n{rest}"


def plot(rows: list[dict], path: Path) -> None:
    """Decode tokens/s per model and condition (groups) and engine (bars), on a log scale: the engines differ
    by more than tenfold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys((row["model"], row["condition"]) for row in rows))
    labels = list(dict.fromkeys(row["engine"] for row in rows))
    speed = {(row["model"], row["condition"], row["engine"]): row["decode_tps"] for row in rows}
    width = 0.8 / len(labels)
    figure, axes = plt.subplots(figsize=(max(7, 1.4 * len(groups)), 4.5))
    for index, label in enumerate(labels):
        x = [group + (index - (len(labels) - 1) / 2) * width for group in range(len(groups))]
        axes.bar(x, [speed.get((*group, label), np.nan) for group in groups], width, label=label)
    axes.set_xticks(range(len(groups)), [f"{tick_label(model)}\n{condition}" for model, condition in groups], fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel("decode tokens/s (greedy, batch 1)")
    axes.set_title("decode speed, idle and with one core busy")
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def host_work_per_token(model_dir: Path, tokens: int) -> dict:
    """Microseconds of CPU time per decoded token, in the calling thread with one intra-op thread: the peer's
    whole step, gentwin.fast's whole step, and gentwin.fast's step less its session run."""
    import gentwin.fast

    og_modules = {PEER: importlib.import_module(PEER), "gentwin.fast": gentwin.fast}
    prompt = np.arange(3, 19, dtype=np.int32)[None, :]
    with with_session_options(model_dir, intra_op_num_threads=1) as folder:
        models = {name: module.Model(str(folder)) for name, module in og_modules.items()}
        session = models["gentwin.fast"].graph.session
        run_session, session_cpu = session.run_with_iobinding, []

        def timed_run(binding, *arguments):
            start = time.thread_time()
            run_session(binding, *arguments)
            session_cpu.append(time.thread_time() - start)

        session.run_with_iobinding = timed_run
        per_token = {name: [] for name in models}
        for _ in range(5):
            for name, model in models.items():
                og = og_modules[name]
                params = og.GeneratorParams(model)
                params.set_search_options(max_length=prompt.shape[1] + tokens + 1)
                generator = og.Generator(model, params)
                generator.append_tokens(prompt)
                session_cpu.clear()
                start, decoded = time.thread_time(), 0
                while decoded < tokens and not generator.is_done():
                    generator.generate_next_token()
                    decoded += 1
                per_token[name].append((time.thread_time() - start) / decoded)
        fast_step, peer_step = statistics.median(per_token["gentwin.fast"]), statistics.median(per_token[PEER])
        return {"peer_step_us": 1e6 * peer_step, "fast_step_us": 1e6 * fast_step,
                "fast_host_us": 1e6 * (fast_step - statistics.median(session_cpu))}


# -- speculative decoding: drafts from n-grams of the sequence, or from a draft model -------------------------

# Code quoted back (a small model, it soon repeats itself instead), which n-gram lookup drafts well, and a
# story, which it rarely can: what follows an n-gram there is seldom what the model writes next. SmolLM2's chat
# format, written out: the fixtures of --quick have no chat template.
SPECULATIVE_PROMPTS = {
    "repetitive": """<|im_start|>user
Copy this function exactly, without any change:
```python
def moving_average(values, window):
    totals, averages = 0.0, []
    for index, value in enumerate(values):
        totals += value
        if index >= window:
            totals -= values[index - window]
        if index >= window - 1:
            averages.append(totals / window)
    return averages
```<|im_end|>
<|im_start|>assistant
```python
""",
    "non-repetitive": "<|im_start|>user\nTell me a story about a village at the edge of a forest.<|im_end|>\n"
                      "<|im_start|>assistant\n",
}
# The same options for both prompts: an adaptive width from 4 (it probes wider while drafts are accepted,
# narrower while they are not), and a cooldown after rounds that accept nothing.
SPECULATIVE_OPTIONS = {"n-gram": dict(ngram_size=3, min_adaptive_k=4, cooldown=True),
                       "draft model": dict(max_draft_tokens=4)}
DRAFTINGS = ("none", "n-gram", "draft model")


@contextlib.contextmanager
def with_draft_model(target: Path, draft: Path):
    """TARGET's model with DRAFT's decoder as its genai_config.json's model.draft: a temporary folder of links,
    DRAFT's files in draft/."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / f"{target.name}+draft"
        (copy / "draft").mkdir(parents=True)
        for item in target.iterdir():
            if item.name != "genai_config.json":
                (copy / item.name).symlink_to(item.resolve())
        draft_block = json.loads((draft / "genai_config.json").read_text())["model"]["decoder"]
        for name in {draft_block["filename"], draft_block["filename"] + ".data"}:
            if (draft / name).exists():
                (copy / "draft" / name).symlink_to((draft / name).resolve())
        draft_block["filename"] = "draft/" + draft_block["filename"]
        config = json.loads((target / "genai_config.json").read_text())
        config["model"]["draft"] = draft_block
        (copy / "genai_config.json").write_text(json.dumps(config))
        yield copy


def speculative_rows(target: Path, draft: Path, engines: list[str], rounds: int, new_tokens: int) -> list[dict]:
    """One row per prompt, drafting and engine: the medians of ROUNDS rounds, each of one generation per
    prompt, drafting and engine in turn, idle. gentwin.reference generates a quarter of NEW_TOKENS."""
    with with_draft_model(target, draft) as with_draft:
        workers = {engine: Worker(engine, target, 8, 4, with_draft) for engine in engines}
        try:
            for worker in workers.values():
                worker.receive()  # ready: loaded and warmed up
            runs = {(prompt, drafting, engine): [] for prompt in SPECULATIVE_PROMPTS for drafting in DRAFTINGS
                    for engine in engines}
            for _ in range(rounds):
                for prompt, drafting, engine in runs:
                    time.sleep(PAUSE_BETWEEN_TURNS)
                    tokens = max(4, new_tokens // 4) if engine == "gentwin.reference" else new_tokens
                    request = {"text": SPECULATIVE_PROMPTS[prompt], "drafting": drafting, "new_tokens": tokens}
                    runs[prompt, drafting, engine].append(workers[engine].run(request))
        finally:
            for worker in workers.values():
                worker.quit()
    rows = [{"model": target.name, "draft": draft.name, "prompt": prompt, "drafting": drafting, "engine": engine,
             "decode_tps": statistics.median(run["decode_tps"] for run in timings),
             "acceptance": statistics.median(run["acceptance"] for run in timings) if drafting != "none" else None}
            for (prompt, drafting, engine), timings in runs.items()]
    speed = {(row["prompt"], row["drafting"], row["engine"]): row["decode_tps"] for row in rows}
    for row in rows:
        row["vs_no_drafts"] = row["decode_tps"] / speed[row["prompt"], "none", row["engine"]]
        row["vs_peer"] = row["decode_tps"] / speed[row["prompt"], row["drafting"], PEER]
    return rows


SPECULATIVE_COLUMNS = [("prompt", "prompt", "{}"), ("drafting", "drafting", "{}"), ("engine", "engine", "{}"),
                       ("decode_tps", "decode tok/s", "{:.1f}"), ("acceptance", "acceptance", "{:.0%}"),
                       ("vs_no_drafts", "vs no drafts", "{:.2f}x"), ("vs_peer", "vs peer", "{:.2f}x")]


def speculative_table(rows: list[dict]) -> str:
    """ROWS as one Markdown table, under a line saying what was measured."""
    first = rows[0]
    lines = [f"speculative decoding on {first['model']} (draft model: {first['draft']}), greedy, idle; n-gram "
             f"options {SPECULATIVE_OPTIONS['n-gram']}, draft model {SPECULATIVE_OPTIONS['draft model']}\n",
             "| " + " | ".join(title for _, title, _ in SPECULATIVE_COLUMNS) + " |",
             "|" + "---|" * len(SPECULATIVE_COLUMNS)]
    lines += ["| " + " | ".join("-" if row[key] is None else form.format(row[key])
                                for key, _, form in SPECULATIVE_COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=ENGINES[1:], help="gentwin engines, next to the peer")
    parser.add_argument("--quick", action="store_true", help="the smallest fixture, two rounds: seconds")
    parser.add_argument("--no-real-model", action="store_true", help="only the bench fixtures (the speculative rows: the committed llama fixtures)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--real-rounds", type=int, default=5, help="rounds on the real model")
    parser.add_argument("--real-new-tokens", type=int, default=16, help="new tokens on the real model")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="where the PNG goes")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--system-tokens", type=int, default=1024, help="system prompt of the chat TTFT table")
    parser.add_argument("--no-speculative", action="store_true", help="without the speculative decoding rows")
    parser.add_argument("--speculative-rounds", type=int, default=5, help="rounds of the speculative rows")
    parser.add_argument("--speculative-new-tokens", type=int, default=64,
                        help="new tokens of the speculative rows (gentwin.reference: a quarter)")
    parser.add_argument("--worker", nargs=2, metavar=("ENGINE", "MODEL_DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--draft-model", help=argparse.SUPPRESS)  # the worker's model with a draft
    args = parser.parse_args(argv)
    if args.worker:
        serve(*args.worker, args.prompt_length, args.new_tokens, args.draft_model)
        return 0

    engines = [PEER] + [engine for engine in args.engines if engine != PEER]
    if args.quick:
        plan = [(QUICK_MODEL, 2, 8, 8)]
    else:
        plan = [(model, args.rounds, args.prompt_length, args.new_tokens) for model in ensure_bench_models()]
        if not args.no_real_model:
            plan += [(model, args.real_rounds, args.prompt_length, args.real_new_tokens) for model in real_models()]
    print(f"greedy, batch 1; each engine in its own process; engines in turn, medians of the rounds; "
          f"busy: one core spinning ({os.cpu_count()} logical CPUs)\n", flush=True)
    rows = []
    for model_dir, rounds, prompt_length, new_tokens in plan:
        print(f"{model_dir.name}: prompt {prompt_length}, {new_tokens} new tokens, {rounds} rounds", flush=True)
        rows += measure_model(model_dir, engines, rounds, prompt_length, new_tokens)
    rows = with_ratios(rows)
    print("\n" + table(rows), flush=True)
    plot(rows, args.plot)
    print(f"\nplot: {args.plot}")
    speculative = []
    if not args.no_speculative:
        target, draft = (QUICK_MODEL, QUICK_DRAFT) if args.quick or args.no_real_model else real_models()
        rounds, new_tokens = (1, 8) if args.quick else (args.speculative_rounds, args.speculative_new_tokens)
        speculative = speculative_rows(target, draft, engines, rounds, new_tokens)
        print("\n" + speculative_table(speculative), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "speculative": speculative}, indent=1))

    host = host_work_per_token(QUICK_MODEL, 8 if args.quick else 100)
    print(f"\nper decoded token on {QUICK_MODEL.name} (2 layers, hidden 64), CPU time, one intra-op thread: "
          f"the peer's step {host['peer_step_us']:.0f} us, gentwin.fast's {host['fast_step_us']:.0f} us, "
          f"of which host work (all but the session run) {host['fast_host_us']:.0f} us")

    if not args.quick:
        shared_prompt_table(ensure_bench_models(), args.engines, args.system_tokens, args.rounds)
    return 0


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


def shared_prompt_table(models: list[Path], engines: list[str], system_tokens: int, repeats: int) -> None:
    print(f"\ntwo chats sharing a {system_tokens}-token system prompt (gentwin.chat): TTFT of each, "
          f"median of {repeats} pairs; target second/first <= 0.3\n")
    print(f"{'model':<18} {'engine':<20} {'first ms':>9} {'second ms':>10} {'second/first':>13}")
    for model_dir in models:
        for engine in engines:
            first, second = shared_system_prompt_ttft(engine, model_dir, system_tokens, repeats)
            print(f"{model_dir.name:<18} {engine:<20} {1000 * first:9.2f} {1000 * second:10.2f} "
                  f"{second / first:12.2f}x", flush=True)


if __name__ == "__main__":
    sys.exit(main())
