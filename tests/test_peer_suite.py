"""tools/peer_suite (`make peer-suite`): the generated onnxruntime_genai package answers with the gentwin engine,
a test's row name is the same whether read from pytest's JUnit XML or, after a crash, from its node id, and a
miniature peer checkout (fake_peer) gives the same table serially and on 2 Ray workers (test_check_ray.py)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tools.peer_suite import run, table

CONFTEST = '''
def pytest_addoption(parser):
    parser.addoption("--test_models", default=None)
'''

TESTS = '''
import pytest


def test_passes():
    assert True


def test_fails():
    assert 1 == 2, "one is not two"


@pytest.mark.parametrize("pattern", ["(yes|no)", "[0-9]{3}"])
def test_parametrized(pattern):
    assert pattern


class TestGroup:
    def test_skips(self):
        pytest.skip("no model here")
'''


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_the_shim_makes_onnxruntime_genai_the_engine(tmp_path, engine):
    shim = run.write_shim(tmp_path, run.ENGINES[engine])
    assert run.imported_module(run.environment(shim)) == run.ENGINES[engine]


def test_junit_rows_are_the_collected_tests(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "test_sample.py").write_text(textwrap.dedent(TESTS))
    env = run.environment(None)
    results = run.run_file("models/test_sample.py", tmp_path, env, tmp_path, tmp_path / "out" / "sample.xml")
    collected = run.collected_keys(run.collect("models/test_sample.py", tmp_path, env, tmp_path))
    assert list(results) == collected
    outcomes = {key.split("::")[-1]: result.outcome for key, result in results.items()}
    assert outcomes == {"test_passes": run.PASSED, "test_fails": run.FAILED, "test_parametrized[(yes|no)]": run.PASSED,
                        "test_parametrized[[0-9]{3}]": run.PASSED, "test_skips": run.SKIPPED}
    failure = next(result for key, result in results.items() if key.endswith("test_fails"))
    assert "one is not two" in failure.message


FAKE_TEST = '''
import os
import signal

import pytest

import onnxruntime_genai as og


def test_the_engine_answers():
    assert og.__name__ in ("onnxruntime_genai", "gentwin.reference", "gentwin.fast")


def test_{name}_fails_on_gentwin():
    assert og.__name__ == "onnxruntime_genai", og.__name__


def test_{name}_skips():
    pytest.skip("no model here")


def test_{name}_kills_its_ray_worker_once():
    """Where $GENTWIN_KILL_ONCE names a file (a Ray worker's environment, tests/test_check_ray.py's cluster),
    the first test process to create FILE.peer-suite kills the Ray worker that runs it, then itself."""
    marker = os.environ.get("GENTWIN_KILL_ONCE")
    if marker and "{name}" == "{killer}":
        try:
            os.close(os.open(marker + ".peer-suite", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os.kill(os.getppid(), signal.SIGKILL)
        os._exit(1)
'''


def fake_peer(root: Path) -> Path:
    """ROOT made a checkout of the peer's repository in miniature: the API test file and a models/ test file
    that pass, fail on gentwin, skip, and (the second) kill their Ray worker once."""
    python = root / "test" / "python"
    (python / "models").mkdir(parents=True)
    (root / "test" / "models").mkdir()
    (python / "conftest.py").write_text(CONFTEST)
    for file, name in (("test_onnxruntime_genai_api.py", "api"), ("models/test_b.py", "b")):
        (python / file).write_text(FAKE_TEST.format(name=name, killer="b"))
    return root


def suite(peer: Path, out: Path, **where) -> tuple[str, dict]:
    """The terminal table and table.json of the suite at PEER on gentwin.reference."""
    files = run.test_files(peer / "test" / "python")
    results = run.run_all(["reference"], peer, out / "models", out / "runs", files, **where)
    table.write(results, out)
    return table.text(results), json.loads((out / "table.json").read_text())
