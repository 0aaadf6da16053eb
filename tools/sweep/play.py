"""Play the sweep's folders on onnxruntime-genai (the peer), gentwin.fast and gentwin.reference, and judge
each engine with gentwin.conformance's verdicts.

Each folder is played in its own process (`python -m tools.sweep.play FOLDER` prints one JSON line), under
a timeout, so that a crash or a hang costs one folder, and each engine loads the folder once. An engine is
judged against the peer wherever the peer plays the scenario through; where the peer cannot (it refuses the
folder, or raises during the scenario), the two gentwin engines are judged against each other instead, and
the table marks that with a `*`.

Per folder and engine the outcome is the worst over the scenarios: refused (Model() or the Generator raised),
diverged, tie, identical.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gentwin import errors
from gentwin.conformance.check import uses_ray
from gentwin.conformance.model_facts import ModelFacts
from gentwin.conformance.scenarios import Scenario, greedy_battery, logits_before_each_choice
from gentwin.conformance.verdict import Side, judge
from tools.sweep.catalogue import Build

ENGINES = ("fast", "reference")
MODULES = {"peer": "onnxruntime_genai", "fast": "gentwin.fast", "reference": "gentwin.reference"}
IDENTICAL, TIE, DIVERGED, REFUSED = "identical", "tie", "diverged", "refused"
AS_PEER = "fails as the peer"   # refused or raised in a scenario the peer cannot play either
ALONE = "runs alone"            # plays a scenario through that neither the peer nor the other engine does
WORST_FIRST = (REFUSED, DIVERGED, TIE, AS_PEER, ALONE, IDENTICAL)
FOLDER_SECONDS = 420


LONG = 48  # past a windowed cache's slots (window 8 + the peer's slack of 16 on the CPU): it evicts


def scenarios(facts) -> list:
    """The fixed set every folder plays: greedy, a right-padded batch, a chat with a second append (from
    conformance's greedy battery), seeded sampling, beam search, logits read before every choice, and a
    chat long enough for a windowed cache to evict before and after its append."""
    greedy = {s.name: s for s in greedy_battery(facts.vocab_size, facts.pad_token_id)}
    prompt = greedy["batch1"].prompt
    turn = greedy["chat-3-turns"].steps[1]
    return [
        greedy["batch1"], greedy["batch2-padded"], greedy["chat-3-turns"],
        Scenario("chat-long", prompt, (("generate", 24), turn, ("finish",)), {"max_length": LONG}),
        Scenario("sampling", prompt, (("generate", 12),),
                 {"do_sample": True, "top_k": 20, "top_p": 0.9, "temperature": 0.8, "random_seed": 7,
                  "max_length": 24}),
        Scenario("beam", prompt, (("finish",),), {"num_beams": 3, "num_return_sequences": 2, "max_length": 16}),
        Scenario("logits", prompt, logits_before_each_choice(6), {"max_length": 24}),
    ]


def first_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text.splitlines()[0][:300]


def play_folder(folder: Path) -> dict:
    """Everything the table needs about one folder (runs in the worker process)."""
    started = time.perf_counter()
    sides, refusals = {}, {}
    for role, module_name in MODULES.items():
        module = importlib.import_module(module_name)
        try:
            sides[role] = Side(module, module.Model(str(folder)))
        except Exception as error:
            refusals[role] = f"Model(): {first_line(error)}"
    report = {"peer": {"refused": refusals.get("peer"), "failed": {}},
              **{engine: {"refused": refusals.get(engine), "verdicts": {}} for engine in ENGINES}}
    if any(engine in sides for engine in ENGINES):
        facts = ModelFacts.read(folder)  # gentwin's reading of the folder: only once an engine took it
        for scenario in scenarios(facts):
            judge_scenario(scenario, sides, refusals, facts, report)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def judge_scenario(scenario, sides: dict, refusals: dict, facts, report: dict) -> None:
    """Each engine's verdict on SCENARIO into REPORT: against the peer where the peer plays it through,
    against the other engine where only that one does. An engine that refuses (or raises) where the peer
    does too is told apart from one that refuses what the peer runs."""
    failures = {role: refusals.get(role) or failure_of(side, scenario) for role, side in sides.items()}
    failures.update(refusals)
    if failures["peer"] and "peer" in sides:
        report["peer"]["failed"][scenario.name] = failures["peer"]
    for engine, other in zip(ENGINES, reversed(ENGINES)):
        if engine not in sides:
            continue
        verdicts = report[engine]["verdicts"]
        if failures[engine] and failures["peer"] and refuses_alike(failures[engine], failures["peer"]):
            verdicts[scenario.name] = {"outcome": AS_PEER, "detail": failures[engine]}
        elif failures[engine] and failures[engine].startswith("Generator"):
            verdicts[scenario.name] = {"outcome": REFUSED, "detail": failures[engine]}
        elif failures["peer"] and failures[other]:
            outcome, detail = ((DIVERGED, f"{failures[engine]}, where the peer: {failures['peer']}")
                               if failures[engine] else (ALONE, f"neither the peer nor {other} plays it through"))
            verdicts[scenario.name] = {"outcome": outcome, "detail": detail[:600]}
        else:
            against = "peer" if not failures["peer"] else other
            impl, oracle = oriented(engine, against)
            try:
                verdict = judge(sides[impl], sides[oracle], scenario, facts)
                outcome, detail = verdict.outcome, f"{impl} against the oracle {oracle}: {verdict.detail}"
            except Exception as error:  # a Generator made for a replay raised: either side
                outcome, detail = DIVERGED, f"the verdict on {impl} against the oracle {oracle} raised {first_line(error)}"
            verdicts[scenario.name] = {"outcome": outcome, "detail": detail[:600], "against": against}


def oriented(engine: str, against: str) -> tuple[str, str]:
    """(implementation, oracle) for judging ENGINE against AGAINST: gentwin.reference is the oracle wherever it
    plays, as in `gentwin check` (whose documented way to compare the peer with it is --impl onnxruntime_genai)."""
    return (against, engine) if engine == "reference" else (engine, against)


def refuses_alike(ours: str, peers: str) -> bool:
    """Whether an engine's failure (failure_of's words) is a refusal where the peer fails too: its Generator
    refused, or a call raised a GentwinError (a deliberate refusal) or the peer's own error."""
    kind, message = ours.split(": ", 2)[1:], peers.split(": ", 2)[2:]
    error_class = getattr(errors, kind[0], None) if kind else None
    return (ours.startswith("Generator")
            or (isinstance(error_class, type) and issubclass(error_class, errors.GentwinError))
            or bool(message and message[0][:80] in ours))


def generator_refusal(side, scenario) -> str | None:
    """What SIDE's Generator said refusing SCENARIO's options, or None when it was made."""
    try:
        side.player(scenario)
    except Exception as error:
        return f"Generator: {first_line(error)}"
    return None


def failure_of(side, scenario) -> str | None:
    """Why the peer cannot play SCENARIO through (its Generator refused, or a call raised), or None."""
    refusal = generator_refusal(side, scenario)
    if refusal:
        return refusal
    events = side.player(scenario).play()
    if events and events[-1].kind == "raised":
        return f"raised at step {events[-1].step}: {events[-1].value.splitlines()[0][:300]}"
    return None


@dataclass
class FolderResult:
    build: Build
    report: dict | None = None      # play_folder's, or None when the folder has none
    problem: str = ""               # why there is no report: the build failed, the worker crashed or hung

    def outcome(self, engine: str) -> tuple[str, str]:
        """(the worst outcome over the scenarios, the first scenario's detail with that outcome)."""
        if self.report is None:
            return "-", self.problem
        side, peer_refusal = self.report[engine], self.report["peer"]["refused"]
        if side["refused"]:
            alike = peer_refusal and refuses_alike(side["refused"], peer_refusal)
            return AS_PEER if alike else REFUSED, side["refused"]
        verdicts = side["verdicts"]
        if not verdicts:
            return "-", "nothing to judge against"
        worst = next(o for o in WORST_FIRST if any(v["outcome"] == o for v in verdicts.values()))
        detail = next(f"{name}: {v['detail']}" for name, v in verdicts.items() if v["outcome"] == worst)
        return worst, detail if worst != IDENTICAL else ""

    def peer_fails_somewhere(self) -> bool:
        return bool(self.report and (self.report["peer"]["refused"] or self.report["peer"]["failed"]))

    def peer_note(self) -> str:
        if self.report is None:
            return ""
        peer = self.report["peer"]
        if peer["refused"]:
            return peer["refused"]
        failed = peer["failed"]
        return "; ".join(f"{name}: {why}" for name, why in failed.items())


def run_worker(build: Build, root: Path) -> FolderResult:
    from tools.sweep.build import failure_note

    folder = root / build.name
    if failure_note(root, build).is_file():
        return FolderResult(build, problem="build failed: " + failure_note(root, build).read_text().strip())
    if not (folder / "genai_config.json").is_file():
        return FolderResult(build, problem="not built")
    command = [sys.executable, "-m", "tools.sweep.play", str(folder)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=FOLDER_SECONDS,
                              cwd=Path(__file__).resolve().parents[2])
    except subprocess.TimeoutExpired:
        return FolderResult(build, problem=f"hung: no answer within {FOLDER_SECONDS} s")
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return FolderResult(build, problem=f"worker exit {done.returncode}: {said[:300]}")
    return FolderResult(build, json.loads(lines[-1]))


SHORT = {IDENTICAL: "id", TIE: "tie", DIVERGED: "DIV", REFUSED: "REF", AS_PEER: "asp", ALONE: "alone", "-": "-"}


def cell(result: FolderResult) -> str:
    if result.report is None:
        return "BUILD" if result.problem.startswith("build failed") else "CRASH" if result.problem != "not built" else "-"
    star = "*" if result.peer_fails_somewhere() else ""
    return "/".join(SHORT[result.outcome(engine)[0]] + star for engine in ENGINES)


def column(build: Build) -> str:
    return "-".join(part for part in (build.precision, build.label) if part)


LEGEND = (
    "fast/reference per family and precision, the worst outcome over the scenarios:",
    "  id identical, tie a numerical tie, DIV diverged, REF refused (Model() or the Generator raised) where the peer runs,",
    "  asp refused or raised where the peer fails too, alone ran what neither the peer nor the other engine runs,",
    "  * the peer cannot play some scenarios (the engines are judged against each other there),",
    "  BUILD the builder failed, CRASH the worker died or hung",
)


def table(results: list[FolderResult]) -> str:
    families = list(dict.fromkeys(r.build.family.name for r in results))
    columns = list(dict.fromkeys(column(r.build) for r in results))
    by_key = {(r.build.family.name, column(r.build)): r for r in results}
    width = max(11, *(len(c) + 1 for c in columns))
    lines = [*LEGEND, "",
             f"{'family':<17}" + "".join(f"{c:>{width}}" for c in columns)]
    for family in families:
        row = "".join(f"{cell(by_key[family, c]) if (family, c) in by_key else '':>{width}}" for c in columns)
        lines.append(f"{family:<17}{row}")
    lines.append("")
    for result in results:
        name = result.build.name
        if result.report is None:
            if result.problem != "not built":
                lines.append(f"{name}: {result.problem}")
            continue
        if result.peer_note():
            lines.append(f"{name} peer: {result.peer_note()}")
        for engine in ENGINES:
            outcome, detail = result.outcome(engine)
            if outcome != IDENTICAL:
                lines.append(f"{name} {engine}: {outcome}: {detail}")
    return "\n".join(lines)


def as_json(results: list[FolderResult]) -> list:
    return [{"folder": r.build.name, "family": r.build.family.name, "precision": r.build.precision,
             "options": list(r.build.options), "problem": r.problem, "report": r.report,
             **{engine: r.outcome(engine)[0] for engine in ENGINES}} for r in results]


def play_all(selected: list[Build], root: Path, json_path: str | None, workers: int = 1,
             ray_address: str | None = None) -> None:
    """Play every SELECTED folder, one after the other or, with WORKERS above 1 or a RAY_ADDRESS, as Ray tasks
    (gentwin check's rules: gentwin.conformance.check.uses_ray); the table is the same either way."""
    def progress(done: int, build: Build, result: FolderResult, seconds: float) -> None:
        print(f"[{done}/{len(selected)}] {build.name:<28} {cell(result):<12} {seconds:.0f}s", flush=True)

    if uses_ray(workers, ray_address):
        results = play_on_ray(selected, root, workers, ray_address, progress)
    else:
        results = []
        for build in selected:
            result, seconds = timed_worker(build, root)
            results.append(result)
            progress(len(results), build, result, seconds)
    print("\n" + table(results))
    if json_path:
        Path(json_path).write_text(json.dumps(as_json(results), indent=1))


def timed_worker(build: Build, root: Path) -> tuple[FolderResult, float]:
    started = time.perf_counter()
    result = run_worker(build, root)
    return result, time.perf_counter() - started


def play_on_ray(selected: list[Build], root: Path, workers: int, ray_address: str | None, progress) -> list:
    """run_worker on each folder as a Ray task (its own process still plays the folder, under the timeout),
    retried by Ray where the worker running it dies; the results in SELECTED's order, PROGRESS as each ends.
    The folders travel by path: on a cluster, ROOT must be on storage every machine sees at that path."""
    from gentwin.conformance import on_ray

    finished = []

    def done(index: int, timed: tuple[FolderResult, float]) -> None:
        finished.append(index)
        progress(len(finished), selected[index], *timed)

    timed = on_ray.run_tasks(timed_worker, [(build, root) for build in selected], workers, ray_address, done)
    return [result for result, _ in timed]


if __name__ == "__main__":
    print(json.dumps(play_folder(Path(sys.argv[1]))))
