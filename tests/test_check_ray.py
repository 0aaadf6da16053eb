"""`gentwin check` on Ray (conformance/on_ray.py): a 2-worker local cluster gives the serial run's results,
a worker killed mid-task costs a retry and no result, a broken implementation's divergences are the serial
run's, and the run refuses what it cannot do; the sweep's
play stage (tools/sweep/play.py) on Ray gives its serial table."""

from __future__ import annotations

import importlib.util
import json
import os
import re

import pytest

from gentwin.cli import main
from gentwin.conformance.check import check
from gentwin.conformance.families import FAMILIES
from gentwin.errors import GentwinError
from gentwin.threads import worker_count
from tests.conftest import FIXTURE_MODELS

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'gentwin[ray]')")
MODELS = [FIXTURE_MODELS / "llama-fp32", FIXTURE_MODELS / "gpt2-fp32"]
EXAMPLES, SEED = 2, 7


def run(tmp_path, name: str, impl: str = "gentwin.fast", **where) -> tuple[str, dict]:
    """The printed report and the JSON results of a check on MODELS (WHERE: workers, ray_address)."""
    out, json_file = (tmp_path / f"{name}.txt").open("w+"), tmp_path / f"{name}.json"
    assert check(impl, "gentwin.reference", MODELS, EXAMPLES, run_seed=SEED, out=out, json_file=json_file, **where)
    out.seek(0)
    return out.read(), json.loads(json_file.read_text())


def cells(results: dict) -> list:
    """The cells without their timing, the one thing that differs between two runs."""
    return [{name: value for name, value in cell.items() if name != "seconds"} for cell in results["cells"]]


def report(printed: str) -> str:
    """The table, the two questions and the ties, refusals and divergences: all but progress and timing."""
    return re.sub(r"gentwin check took \d+ s\n", "", printed[printed.index("identical/diverged/tie"):])


def progress(printed: str) -> list:
    return re.findall(r"^  (\S+) +(\S+) .*\[(\d+)/(\d+)\]$", printed, re.MULTILINE)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    return run(tmp_path_factory.mktemp("serial"), "serial")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster of 2 workers, whose workers kill themselves once where the test impl is told to; a
    run joins it by its address (--ray-address)."""
    import ray

    kill_once = tmp_path_factory.mktemp("kill") / "killed"
    os.environ["GENTWIN_KILL_ONCE"] = str(kill_once)  # the workers inherit the environment of ray.init
    try:
        context = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    finally:
        del os.environ["GENTWIN_KILL_ONCE"]
    yield context.address_info["address"], kill_once
    ray.shutdown()


@needs_ray
def test_two_workers_started_here_give_the_serial_results(serial, tmp_path, capsys):
    models = [arg for folder in MODELS for arg in ("--model", str(folder))]
    json_file = tmp_path / "ray.json"
    assert main(["check", *models, "--examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "2",
                 "--json", str(json_file)]) == 0
    printed, results = capsys.readouterr().out, json.loads(json_file.read_text())
    assert "on a local Ray cluster of 2 workers" in printed
    assert cells(results) == cells(serial[1]) and results["passed"]
    assert report(printed) == report(serial[0])
    tasks = len(MODELS) * len(FAMILIES)
    assert sorted(int(done) for *_, done, _ in progress(printed)) == list(range(1, tasks + 1))


@needs_ray
def test_a_worker_killed_mid_task_costs_a_retry_and_no_result(serial, cluster, tmp_path):
    address, kill_once = cluster
    printed, results = run(tmp_path, "killed", impl="tests.impl_killed_once", ray_address=address)
    assert kill_once.read_text().isdigit()  # a worker did die, making a Generator: mid-task
    assert cells(results) == cells(serial[1])  # every cell, once, as the serial run has it
    finished = [(model, family) for model, family, *_ in progress(printed)]
    assert sorted(finished) == sorted((folder.name, family.name) for folder in MODELS for family in FAMILIES)


@needs_ray
def test_the_sweep_plays_its_folders_on_ray_as_it_does_serially(cluster, tmp_path, capsys):
    from tools.sweep.catalogue import Build, Family
    from tools.sweep.play import play_all

    builds = [Build(Family("llama", "llama"), "fp32"), Build(Family("no-such", "llama"), "fp32")]  # one not built

    def played(name: str, **where) -> tuple[str, list]:
        play_all(builds, FIXTURE_MODELS, str(tmp_path / f"{name}.json"), **where)
        results = json.loads((tmp_path / f"{name}.json").read_text())
        for result in results:
            (result["report"] or {}).pop("seconds", None)
        return capsys.readouterr().out.split("\n\n", 1)[1], results

    table, results = played("serial")
    assert [result["fast"] for result in results] == ["identical", "-"]
    assert played("ray", ray_address=cluster[0]) == (table, results)


@needs_ray
def test_a_broken_implementation_gets_the_serial_divergences(cluster, tmp_path):
    """The first divergence (of the fixed battery here, so nothing to shrink: the same on both) is played again
    by a shrinking task; the later ones are reported as found, as the serial run reports them."""
    broken = "tests.broken_impls.top_k_off_by_one"

    def cells_of(name: str, **where) -> list:
        json_file = tmp_path / f"{name}.json"
        assert not check(broken, "gentwin.reference", [FIXTURE_MODELS / "llama-fp32"], 10, run_seed=SEED,
                         out=(tmp_path / name).open("w"), json_file=json_file, **where)
        return cells(json.loads(json_file.read_text()))

    serial = cells_of("serial")
    assert sum(bool(cell["failure"]) for cell in serial) > 1
    assert cells_of("ray", ray_address=cluster[0]) == serial


@pytest.mark.parametrize("where, refused", [({"workers": 0}, "--workers must be 1 or more"),
                                            ({"workers": 2, "ray_address": "auto"}, "--workers sizes")])
def test_impossible_placements_are_refused(where, refused):
    with pytest.raises(GentwinError, match=refused):
        check("gentwin.fast", "gentwin.reference", MODELS, 0, **where)


def test_asking_for_ray_without_it_installed_is_refused(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "ray" else
                        real_find_spec(name, *rest))
    with pytest.raises(GentwinError, match=r"not installed \(pip install 'gentwin\[ray\]'\)"):
        check("gentwin.fast", "gentwin.reference", MODELS, 0, workers=2)


@needs_ray
def test_the_peer_suite_on_two_workers_gives_the_serial_table_though_a_worker_dies(cluster, tmp_path, capsys):
    """The miniature peer checkout's models/test_b.py kills the Ray worker running it, once: its file is
    retried, and every test is in the table once, as the serial run has it."""
    from tests.test_peer_suite import fake_peer, suite

    peer = fake_peer(tmp_path / "peer")
    serial = suite(peer, tmp_path / "serial")
    assert serial[1]["totals"]["all"] == {"reference": {"passed": 4, "failed": 2, "skipped": 2}}
    capsys.readouterr()
    assert suite(peer, tmp_path / "ray", ray_address=cluster[0]) == serial
    assert (cluster[1].parent / (cluster[1].name + ".peer-suite")).is_file()  # a worker did die
    progress = re.findall(r"\[(\d)/2 reference\]$", capsys.readouterr().out, re.MULTILINE)
    assert sorted(progress) == ["1", "2"]


@pytest.mark.parametrize("load, workers", [(0.3, 2), (1.4, 1), (5.0, 1)])
def test_auto_workers_are_the_free_cores_and_at_least_one(monkeypatch, load, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    assert worker_count("auto") == workers


def test_workers_other_than_a_number_or_auto_are_refused(capsys):
    from tools.peer_suite.__main__ import main as peer_suite
    from tools.sweep.__main__ import main as sweep

    for parse, argv in ((main, ["check"]), (sweep, ["play"]), (peer_suite, ["peer", "run"])):
        with pytest.raises(SystemExit):
            parse([*argv, "--workers", "many"])
        assert "--workers: takes a number or 'auto', not 'many'" in capsys.readouterr().err
