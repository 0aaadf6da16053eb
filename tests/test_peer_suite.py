"""tools/peer_suite (`make peer-suite`): the generated onnxruntime_genai package answers with the gentwin engine,
and a test's row name is the same whether read from pytest's JUnit XML or, after a crash, from its node id."""

from __future__ import annotations

import textwrap

import pytest

from tools.peer_suite import run

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
