"""`gentwin check`: play the scenario battery on an implementation and an oracle and compare token streams.

Any importable module offering onnxruntime-genai's Python API plugs in: gentwin.reference,
onnxruntime_genai itself, or anyone's. Prints a table (model x scenario) and exits non-zero on a divergence,
printing a runnable snippet that reproduces it.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from gentwin.config import load_config
from gentwin.conformance.scenarios import Scenario, greedy_battery, play

PEER_MODULE = "onnxruntime_genai"
BUNDLED_MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"


def bundled_models() -> list[Path]:
    return sorted(p for p in BUNDLED_MODELS.glob("*") if (p / "genai_config.json").is_file())


def _play(module, model, scenario: Scenario) -> list:
    # The peer needs get_logits() before an append that follows generation (see README, "Differences").
    return play(module, model, scenario, feed_pending_before_append=module.__name__ == PEER_MODULE)


def reproduction(impl: str, oracle: str, model_dir: Path, scenario: Scenario) -> str:
    return "\n".join([
        "import " + impl + " as impl, " + oracle + " as oracle",
        "from gentwin.conformance.scenarios import Scenario, play",
        f"scenario = {scenario!r}",
        "for og in (impl, oracle):",
        f"    print(og.__name__, play(og, og.Model({str(model_dir)!r}), scenario, "
        f"feed_pending_before_append=og.__name__ == {PEER_MODULE!r}))",
    ])


def check(impl_name: str, oracle_name: str, model_dirs: list[Path], out=sys.stdout) -> bool:
    """Run the battery on every model; print the table and any reproduction; return True if all identical."""
    impl, oracle = importlib.import_module(impl_name), importlib.import_module(oracle_name)
    print(f"gentwin check: {impl_name} against the oracle {oracle_name}", file=out)
    failures = []
    for model_dir in model_dirs:
        impl_model, oracle_model = impl.Model(str(model_dir)), oracle.Model(str(model_dir))
        config = load_config(str(model_dir))  # read here: any implementation's Model will do
        for scenario in greedy_battery(min(config.vocab_size, 1000), config.pad_token_id):
            started = time.perf_counter()
            same = _play(impl, impl_model, scenario) == _play(oracle, oracle_model, scenario)
            verdict = "identical" if same else "DIVERGED"
            print(f"  {model_dir.name:<28} {scenario.name:<18} {verdict:<10} {time.perf_counter() - started:6.2f}s",
                  file=out, flush=True)
            if not same:
                failures.append((model_dir, scenario))
    for model_dir, scenario in failures:
        print(f"\nDivergence on {model_dir.name} / {scenario.name}; reproduce with:\n", file=out)
        print(reproduction(impl_name, oracle_name, model_dir, scenario), file=out)
    print(f"\n{'all identical' if not failures else f'{len(failures)} scenario(s) diverged'}", file=out)
    return not failures
