"""The per-test table: one row per test, the outcome on the peer, gentwin.reference and gentwin.fast, totals
per test file, and, for every test the peer passes and a gentwin engine does not, what the engine said."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tools.peer_suite.run import CRASHED, ENGINES, ERROR, FAILED, PASSED, SKIPPED, TIMEOUT, Result

OUTCOMES = (PASSED, FAILED, ERROR, SKIPPED, TIMEOUT, CRASHED)
GENTWIN = [engine for engine in ENGINES if engine != "peer"]


def file_of(key: str) -> str:
    """The test file a row's key names: models.test_x.TestY::test_z -> models/test_x.py."""
    parts = key.split("::")[0].split(".")
    module = parts[:2] if parts[0] == "models" else parts[:1]
    return "/".join(module) + ".py"


def rows(results: dict[str, dict[str, Result]]) -> list[str]:
    """Every test any engine ran, in the order the first engine that has it ran it."""
    return list(dict.fromkeys(key for engine in results for key in results[engine]))


def outcome(results: dict, engine: str, key: str) -> Result:
    return results.get(engine, {}).get(key, Result("-"))


def totals(results: dict, keys: list[str]) -> dict[str, Counter]:
    return {engine: Counter(outcome(results, engine, key).outcome for key in keys) for engine in results}


def regressions(results: dict) -> list[tuple[str, str, Result]]:
    """(test, engine, what the engine said) for every test the peer passes and a gentwin engine does not."""
    return [(key, engine, outcome(results, engine, key)) for key in rows(results)
            for engine in GENTWIN if engine in results
            if outcome(results, "peer", key).outcome == PASSED and outcome(results, engine, key).outcome != PASSED]


def total_cell(counter: Counter) -> str:
    return " ".join(f"{counter[name]} {name}" for name in OUTCOMES if counter[name])


def per_file(results: dict) -> list[tuple[str, dict[str, Counter]]]:
    keys = rows(results)
    files = list(dict.fromkeys(file_of(key) for key in keys))
    return [(file, totals(results, [key for key in keys if file_of(key) == file])) for file in files] + [
        ("all", totals(results, keys))]


def cell(text: str) -> str:
    """TEXT inside a markdown table's cell: a parametrized test's name may hold a `|` ("(yes|no)")."""
    return text.replace("|", "\\|")


def markdown(results: dict) -> str:
    engines = list(results)
    lines = ["| test | " + " | ".join(engines) + " |", "|---" * (len(engines) + 1) + "|"]
    lines += [f"| `{cell(key)}` | " + " | ".join(outcome(results, engine, key).outcome for engine in engines) + " |"
              for key in rows(results)]
    lines += ["", "| file | " + " | ".join(engines) + " |", "|---" * (len(engines) + 1) + "|"]
    lines += [f"| {file} | " + " | ".join(total_cell(counts[engine]) for engine in engines) + " |"
              for file, counts in per_file(results)]
    lines += ["", "The peer passes, gentwin does not:", ""]
    lines += [f"- `{key}` {engine}: {result.outcome}: {result.message}" for key, engine, result in regressions(results)]
    return "\n".join(lines) + "\n"


def text(results: dict) -> str:
    """The table for the terminal: the tests every engine skipped are counted, not listed (table.md lists them)."""
    engines = list(results)
    keys = [key for key in rows(results)
            if any(outcome(results, engine, key).outcome != SKIPPED for engine in engines)]
    width = max(len(key) for key in keys) + 2 if keys else 8
    lines = [f"{'test':<{width}}" + "".join(f"{engine:>11}" for engine in engines)]
    lines += [f"{key:<{width}}" + "".join(f"{outcome(results, engine, key).outcome:>11}" for engine in engines)
              for key in keys]
    lines += [f"({len(rows(results)) - len(keys)} tests skipped on every engine are listed in table.md)", ""]
    for file, counts in per_file(results):
        lines.append(f"{file}: " + "; ".join(f"{engine} {total_cell(counts[engine])}" for engine in engines))
    lines += ["", "The peer passes, gentwin does not:"]
    lines += [f"  {key} {engine}: {result.outcome}: {result.message[:160]}"
              for key, engine, result in regressions(results)]
    return "\n".join(lines)


def as_json(results: dict) -> dict:
    return {"totals": {file: {engine: dict(counts[engine]) for engine in results} for file, counts in per_file(results)},
            "tests": {key: {engine: vars(outcome(results, engine, key)) for engine in results}
                      for key in rows(results)}}


def write(results: dict, folder: Path) -> None:
    (folder / "table.md").write_text(markdown(results))
    (folder / "table.json").write_text(json.dumps(as_json(results), indent=1))
