"""`gentwin check`: play the scenario families on an implementation and an oracle, and compare what they do.

Any importable module offering onnxruntime-genai's Python API plugs in: gentwin.fast, onnxruntime_genai
itself, or anyone's. For every model and every family (families.py) the check plays the family's fixed
battery, then lets hypothesis generate EXAMPLES more scenarios (reproducibly, from SEED). Each scenario gets a
verdict (verdict.py): identical, a numerical tie, or a divergence, from two questions asked apart: the model
(the logits on the same token history, within a bound derived from the model's quantization) and the search
(the choices made from the same logits, exactly). The report has a table of each. A divergence ends its model x family there.
If the run's first divergence is a generated scenario, hypothesis shrinks it to a minimal one (for at most
SHRINK_SECONDS, keeping the smallest case so far); later ones are reported as found, so a broken
implementation fails in about the time a sound one passes. Each is printed as a runnable snippet.

The run passes when nothing diverged and, on the models that round only as float32 does, the ties stay within
TIE_FRACTION of the scenarios compared there: where only float32 rounding separates two implementations, one
that needs ties often is not close enough. On a model that rounds activations to int8 (accuracy_level 4) or
computes in half precision, two correct implementations' logits differ by up to the rounding's reach, ties are
common on deep models (SmolLM2-135M int4: 12 of 13 streams part), and each tie has passed both questions, so
they are reported and not budgeted.

With --workers N (N > 1; auto: the free cores) or --ray-address the cells are tasks on Ray (on_ray.py), with the serial run's results.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import time
import xml.etree.ElementTree as ElementTree
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings
from hypothesis.errors import Flaky
from hypothesis.internal.conjecture import providers

from gentwin.conformance.families import FAMILIES, Capabilities, Family
from gentwin.conformance.model_facts import ModelFacts
from gentwin.conformance.scenarios import PEER_MODULE, ModelRefused, Scenario, refusal
from gentwin.conformance.verdict import (DIFFERS, DIVERGED, IDENTICAL, MODEL, SAME, SEARCH, TIE, Side,
                                        Verdict, judge)
from gentwin.errors import GentwinError

DEFAULT_IMPL = "gentwin.fast"
DEFAULT_ORACLE = "gentwin.reference"
DEFAULT_EXAMPLES = 25
TIE_FRACTION = 0.1
SHRINK_SECONDS = 5.0
BUNDLED_MODELS = Path(__file__).resolve().parents[1] / "fixtures" / "models"

__all__ = ["DEFAULT_EXAMPLES", "DEFAULT_IMPL", "DEFAULT_ORACLE", "PEER_MODULE", "bundled_models", "check"]


def bundled_models() -> list[Path]:
    return sorted(p for p in BUNDLED_MODELS.glob("*") if (p / "genai_config.json").is_file())


def import_implementation(name: str):
    """Import the module NAME; like `python -m`, the current directory is searched too."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise GentwinError(f"cannot import the implementation {name!r}: {error}") from error


@dataclass
class Cell:
    """The verdicts of one model x family, and the two questions' answers over them."""

    counts: dict = field(default_factory=lambda: {IDENTICAL: 0, DIVERGED: 0, TIE: 0})
    ties: list = field(default_factory=list)         # [(scenario, verdict)]
    refusals: list = field(default_factory=list)     # [(scenario, verdict)]: both sides refused alike
    failure: tuple | None = None                      # (scenario, verdict): the minimal divergence found
    seconds: float = 0.0
    logit_rows: int = 0                               # the model question: rows of logits compared
    worst: float = 0.0                                # ... the largest error as a fraction of its bound
    searches: dict = field(default_factory=lambda: {SAME: 0, DIFFERS: 0})  # the search question, where asked
    diverged_in: dict = field(default_factory=dict)   # {MODEL / SEARCH / STREAM: divergences}
    ties_budgeted: bool = True                        # its ties count against TIE_FRACTION (no int8 or half rounding)

    def count(self, scenario: Scenario, verdict: Verdict) -> None:
        self.counts[verdict.outcome] += 1
        self.logit_rows += verdict.rows
        self.worst = max(self.worst, verdict.worst)
        if verdict.search:
            self.searches[verdict.search] += 1
        if verdict.outcome == TIE:
            self.ties.append((scenario, verdict))
        if verdict.refused:
            self.refusals.append((scenario, verdict))
        if verdict.outcome == DIVERGED:
            self.diverged_in[verdict.diverged_in] = self.diverged_in.get(verdict.diverged_in, 0) + 1
            if self.failure is None:
                self.failure = (scenario, verdict)

    @property
    def played(self) -> int:
        return sum(self.counts.values())


class _Diverged(Exception):
    """Tells hypothesis that a scenario failed, so it shrinks it."""


class _ShrinkingTimeSpent(BaseException):
    """Stops hypothesis's shrinking (a BaseException: hypothesis lets it through instead of shrinking it)."""


@contextlib.contextmanager
def same_scenarios_for_a_seed():
    """Keep hypothesis to its own pool of special values while it generates, so that a seed gives the same
    scenarios in every process.

    Since 6.131 hypothesis also draws the literals it finds in the source of the "local" modules in sys.modules
    (not installed, not tests). So a seed's scenarios would depend on what the process happens to have imported
    (--impl, the test suite around it) and on whether gentwin is installed editable. There is no setting for
    this, so its private hook is switched off here; its cache of permitted constants is cleared on the way in
    and out, as it holds the local ones once seen."""
    local_constants = providers._get_local_constants
    providers.CONSTANTS_CACHE.cache.clear()
    providers._get_local_constants = providers.Constants
    try:
        yield
    finally:
        providers._get_local_constants = local_constants
        providers.CONSTANTS_CACHE.cache.clear()


def search(judge_one, strategy, cell: Cell, examples: int, run_seed: int, shrink: bool) -> None:
    """Let hypothesis generate EXAMPLES scenarios from STRATEGY and judge them into CELL, stopping at the first
    divergence, which is shrunk (when SHRINK is true) and stored as the cell's failure."""
    found = {}  # the latest (so smallest) failing scenario, and when the first one was found

    def judged(scenario: Scenario) -> None:
        verdict = judge_one(scenario)
        if not found:  # scenarios tried while shrinking are not counted
            cell.count(scenario, verdict)
        if verdict.outcome == DIVERGED:
            found.setdefault("since", time.perf_counter())
            found["case"] = (scenario, verdict)
            if time.perf_counter() - found["since"] > SHRINK_SECONDS:
                raise _ShrinkingTimeSpent
            raise _Diverged

    phases = (Phase.generate, Phase.shrink) if shrink else (Phase.generate,)
    run = settings(max_examples=examples, phases=phases, database=None, deadline=None, verbosity=Verbosity.quiet,
                   suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    try:
        with same_scenarios_for_a_seed():
            seed(run_seed)(run(given(strategy)(judged)))()
    except (_Diverged, _ShrinkingTimeSpent, Flaky):
        if "case" not in found:
            raise  # hypothesis itself stumbled: not a verdict
        cell.failure = found["case"]  # after Flaky too: replayed, the case passed (a non-deterministic impl)


def check_model(impl, oracle, folder: Path, family: Family, examples: int, run_seed: int, shrink: bool) -> Cell:
    """The verdicts of FAMILY on FOLDER. A side whose Model() refuses the folder plays the fixed battery as that
    refusal (verdict.judge: alike on both sides, not a divergence), and no scenario is generated for it."""
    facts = ModelFacts.read(folder)
    cell, started = Cell(ties_budgeted=not facts.rounds_beyond_float32), time.perf_counter()
    sides = Side(impl, _loaded(impl, folder)), Side(oracle, _loaded(oracle, folder), drafts=False)

    def judge_one(scenario: Scenario) -> Verdict:
        return judge(*sides, scenario, facts)

    for scenario in family.battery(facts):
        cell.count(scenario, judge_one(scenario))
    if cell.failure is None and examples > 0 and not any(refusal(side.model) for side in sides):
        strategy = family.strategy(facts, Capabilities.of(sides))
        search(judge_one, strategy, cell, examples, _cell_seed(run_seed, folder, family), shrink)
    cell.seconds = time.perf_counter() - started
    return cell


_models: dict = {}


def _loaded(module, folder: Path):
    """One Model per (module, folder) per process: loading is the slow part of a small check. A Model() that
    raises gives its refusal (scenarios.ModelRefused), which every scenario then observes."""
    key = (module.Model, str(folder))  # wrappers that reuse another module's Model share its models
    if key not in _models:
        try:
            _models[key] = module.Model(str(folder))
        except Exception as error:  # an implementation refusing a folder is an observation, not the check's end
            _models[key] = ModelRefused(error)
    return _models[key]


def _cell_seed(run_seed: int, folder: Path, family: Family) -> int:
    return zlib.crc32(f"{run_seed}/{folder.name}/{family.name}".encode())


def check(impl_name: str, oracle_name: str, model_dirs: list[Path], examples: int = DEFAULT_EXAMPLES,
          run_seed: int = 0, out=None, workers: int = 1, ray_address: str | None = None,
          json_file: Path | None = None, junit_file: Path | None = None) -> bool:
    """Check IMPL_NAME against ORACLE_NAME on every model; print progress, the table, reproductions of any
    divergence and the ties (to OUT, sys.stdout by default), and write them to JSON_FILE as JSON and to
    JUNIT_FILE as JUnit XML where given;
    return True when nothing diverged and the ties are few enough. With WORKERS above 1 the cells are played
    on a local Ray cluster of that many CPUs started here, with RAY_ADDRESS on the running cluster there
    (on_ray.py); the results are the serial run's."""
    out = out or sys.stdout
    if examples < 0:
        raise GentwinError(f"--examples must be 0 or more, got {examples}")
    distributed = uses_ray(workers, ray_address)
    started = time.perf_counter()
    impl, oracle = import_implementation(impl_name), import_implementation(oracle_name)
    print(f"gentwin check: {impl_name} against the oracle {oracle_name}, {examples} generated scenarios per "
          f"model and family (seed {run_seed})", file=out, flush=True)
    model_dirs = [Path(folder) for folder in model_dirs]
    if distributed:
        cells = check_on_ray(impl_name, oracle_name, model_dirs, examples, run_seed, workers, ray_address, out)
    else:
        cells = {}
        for folder in model_dirs:
            for family in FAMILIES:
                shrink = not any(cell.failure for cell in cells.values())
                cell = check_model(impl, oracle, folder, family, examples, run_seed, shrink)
                cells[folder.name, family.name] = cell
                print(_progress(folder.name, family.name, cell), file=out, flush=True)
    passed = report(cells, impl_name, oracle_name, model_dirs, run_seed, out)
    if json_file:
        write_json(json_file, cells, impl_name, oracle_name, model_dirs, examples, run_seed)
    if junit_file:
        write_junit_xml(junit_file, cells, impl_name, oracle_name, model_dirs)
    print(f"gentwin check took {time.perf_counter() - started:.0f} s", file=out)
    return passed


def uses_ray(workers: int, ray_address: str | None) -> bool:
    """Whether the run goes to Ray: on a cluster's address, or with more than one local worker. Asking for
    either without Ray installed is an error, not a silently serial run."""
    if workers < 1:
        raise GentwinError(f"--workers must be 1 or more, got {workers}")
    if ray_address and workers > 1:
        raise GentwinError("--workers sizes the local Ray cluster; on --ray-address the cluster's own CPUs "
                           "bound the run")
    if not ray_address and workers == 1:
        return False
    if importlib.util.find_spec("ray") is None:
        raise GentwinError("--workers above 1 and --ray-address run on Ray, which is not installed "
                           "(pip install 'gentwin[ray]')")
    return True


def check_on_ray(impl_name: str, oracle_name: str, model_dirs: list[Path], examples: int, run_seed: int,
                 workers: int, ray_address: str | None, out) -> dict:
    import ray

    from gentwin.conformance import on_ray

    where = f"the Ray cluster at {ray_address}" if ray_address else f"a local Ray cluster of {workers} workers"
    print(f"on {where}, one task per model and family", file=out, flush=True)

    def progress(model: str, family: str, cell: Cell, done: int, total: int) -> None:
        print(f"{_progress(model, family, cell)}  [{done}/{total}]", file=out, flush=True)

    started_here = on_ray.connect(ray_address, workers)
    try:
        return on_ray.check_cells(impl_name, oracle_name, model_dirs, examples, run_seed, progress)
    finally:
        if started_here:
            ray.shutdown()


def _progress(model: str, family: str, cell: Cell) -> str:
    return f"  {model:<22} {family:<11} {_counts(cell)}  {cell.seconds:5.1f}s"


def _counts(cell: Cell) -> str:
    counts = cell.counts
    return f"{counts[IDENTICAL]:3d} identical {counts[DIVERGED]:2d} diverged {counts[TIE]:2d} tie"


def report(cells: dict, impl_name: str, oracle_name: str, model_dirs, run_seed: int, out) -> bool:
    models = list(dict.fromkeys(model for model, _ in cells))
    families = [family.name for family in FAMILIES]
    print("\nidentical/diverged/tie per model and family:\n", file=out)
    print(f"  {'model':<22}" + "".join(f"{name:>12}" for name in families), file=out)
    for model in models:
        row = "".join(f"{'/'.join(str(cells[model, f].counts[o]) for o in (IDENTICAL, DIVERGED, TIE)):>12}"
                      for f in families)
        print(f"  {model:<22}{row}", file=out)
    print_questions(cells, models, out)
    folders = {Path(folder).name: Path(folder) for folder in model_dirs}
    for (model, family), cell in cells.items():
        if cell.refusals:
            scenario, verdict = cell.refusals[0]
            print(f"\nrefused alike on {model} / {family} ({len(cell.refusals)} of {cell.played} scenarios): "
                  f"{verdict.detail}\n  scenario = {scenario!r}", file=out)
        for scenario, verdict in cell.ties:
            print(f"\nnumerical tie on {model} / {family}: {verdict.detail}\n  scenario = {scenario!r}", file=out)
        if cell.failure:
            scenario, verdict = cell.failure
            print(f"\nDIVERGED on {model} / {family}: {verdict.detail}\nreproduce with, in this folder:\n", file=out)
            print(reproduction(impl_name, oracle_name, folders[model], scenario), file=out)
    total = {outcome: sum(cell.counts[outcome] for cell in cells.values()) for outcome in (IDENTICAL, DIVERGED, TIE)}
    too_many = (f" (more than {TIE_FRACTION:.0%} of the scenarios on models rounding only as float32 does: too many)"
                if too_many_ties(cells) else "")
    print(f"\n{sum(total.values())} scenarios: {total[IDENTICAL]} identical, {total[DIVERGED]} diverged, "
          f"{total[TIE]} numerical tie(s){too_many}", file=out)
    return passes(cells)


def print_questions(cells: dict, models: list, out) -> None:
    """The two questions per model, over all its families: the model (teacher-forced logits within the bound)
    and the search (the oracle's logits fed to the implementation, its choices compared exactly)."""
    print("\nthe two questions per model: the model (rows of logits on the same token history, the largest error "
          "as a\nfraction of the model's bound) and the search (streams that parted, replayed with the oracle's "
          "logits):\n", file=out)
    print(f"  {'model':<22}  {'the model':<42}  the search", file=out)
    for model in models:
        own = [cell for (name, _), cell in cells.items() if name == model]
        rows, worst = sum(cell.logit_rows for cell in own), max(cell.worst for cell in own)
        beyond, wrong = (sum(cell.diverged_in.get(kind, 0) for cell in own) for kind in (MODEL, SEARCH))
        replayed = sum(cell.searches[SAME] + cell.searches[DIFFERS] for cell in own)
        model_answer = f"{rows} rows, worst {worst:.2g} of the bound, {beyond} beyond"
        search_answer = f"{replayed} replayed, {wrong} chose otherwise"
        print(f"  {model:<22}  {model_answer:<42}  {search_answer}", file=out)


def too_many_ties(cells: dict) -> bool:
    budgeted = [cell for cell in cells.values() if cell.ties_budgeted]
    return sum(cell.counts[TIE] for cell in budgeted) > TIE_FRACTION * sum(cell.played for cell in budgeted)


def passes(cells: dict) -> bool:
    """The run passes when nothing diverged and the ties are at most TIE_FRACTION of the scenarios played on
    the models that round only as float32 does."""
    return not any(cell.counts[DIVERGED] for cell in cells.values()) and not too_many_ties(cells)


def write_json(path: Path, cells: dict, impl_name: str, oracle_name: str, model_dirs, examples: int,
               run_seed: int) -> None:
    """The run's results for machines (a CI): the run's settings and verdict, and per model x family what the
    table and the two questions report, its ties, refusals and divergence (with its reproduction)."""
    folders = {folder.name: folder for folder in model_dirs}

    def case(scenario: Scenario, verdict: Verdict) -> dict:
        return {"scenario": repr(scenario), "detail": verdict.detail, "diverged_in": verdict.diverged_in}

    results = {
        "impl": impl_name, "oracle": oracle_name, "examples": examples, "seed": run_seed,
        "passed": passes(cells), "too_many_ties": too_many_ties(cells),
        "cells": [{
            "model": model, "family": family, **cell.counts, "seconds": round(cell.seconds, 3),
            "logit_rows": cell.logit_rows, "worst": cell.worst, "searches": cell.searches,
            "diverged_in": cell.diverged_in, "ties_budgeted": cell.ties_budgeted,
            "ties": [case(*tie) for tie in cell.ties],
            "refusals": [case(*refused) for refused in cell.refusals],
            "failure": cell.failure and {**case(*cell.failure), "reproduce": reproduction(
                impl_name, oracle_name, folders[model], cell.failure[0])},
        } for (model, family), cell in cells.items()],
    }
    Path(path).write_text(json.dumps(results, indent=1) + "\n")


def write_junit_xml(path: Path, cells: dict, impl_name: str, oracle_name: str, model_dirs) -> None:
    """The run as JUnit XML, which CI systems show: a test suite per model and a test case per family, failed
    where it diverged (the verdict and its reproduction in the failure), its counts and ties in its output; and
    a suite "the run" whose one case fails where the ties exceed their budget."""
    folders = {folder.name: folder for folder in model_dirs}
    root = ElementTree.Element("testsuites", name=f"gentwin check: {impl_name} against the oracle {oracle_name}")
    for model in dict.fromkeys(name for name, _ in cells):
        own = {family: cell for (name, family), cell in cells.items() if name == model}
        suite = ElementTree.SubElement(root, "testsuite", name=model, tests=str(len(own)),
                                       failures=str(sum(cell.failure is not None for cell in own.values())),
                                       time=f"{sum(cell.seconds for cell in own.values()):.3f}")
        for family, cell in own.items():
            case = ElementTree.SubElement(suite, "testcase", classname=model, name=family, time=f"{cell.seconds:.3f}")
            if cell.failure:
                scenario, verdict = cell.failure
                failure = ElementTree.SubElement(case, "failure", message=f"diverged: {verdict.detail}")
                failure.text = (f"{verdict.detail}\nscenario = {scenario!r}\nreproduce with:\n"
                                + reproduction(impl_name, oracle_name, folders[model], scenario))
            ties = "".join(f"\nnumerical tie: {verdict.detail}\n  scenario = {scenario!r}"
                           for scenario, verdict in cell.ties)
            ElementTree.SubElement(case, "system-out").text = _counts(cell) + ties
    run = ElementTree.SubElement(root, "testsuite", name="the run", tests="1", failures=str(int(too_many_ties(cells))))
    budget = ElementTree.SubElement(run, "testcase", classname="the run", name="ties within the budget")
    if too_many_ties(cells):
        ElementTree.SubElement(budget, "failure", message=f"more than {TIE_FRACTION:.0%} of the scenarios on "
                                                          "models rounding only as float32 does are ties")
    ElementTree.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def reproduction(impl_name: str, oracle_name: str, folder: Path, scenario: Scenario) -> str:
    """A shell command that plays SCENARIO on both and prints the verdict. Python reads the program from stdin,
    so the current folder is on its path, as it was for `gentwin check`."""
    return "\n".join([
        "python - <<'EOF'",
        f"import {impl_name} as impl",
        f"import {oracle_name} as oracle",
        "from gentwin.conformance.model_facts import ModelFacts",
        "from gentwin.conformance.scenarios import Scenario",
        "from gentwin.conformance.verdict import Side, judge",
        "",
        f"folder = {str(folder.resolve())!r}",
        f"scenario = {scenario!r}",
        "print(judge(Side(impl, impl.Model(folder)), Side(oracle, oracle.Model(folder), drafts=False), scenario,",
        "            ModelFacts.read(folder)))",
        "EOF",
    ])
