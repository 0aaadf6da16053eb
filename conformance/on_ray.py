"""`gentwin check` on Ray: every model x family is a task, played by one actor per model.

Each actor imports the two implementations and loads the model folder once (check._loaded), then plays its
families one task at a time; the folder travels by path, so a cluster needs the folders on shared storage at
the same path. A cell's scenarios depend only on the run's seed, the folder's name and the family
(check._cell_seed), so a task gives the cell the serial run gives, whichever worker plays it and whenever.

One thing in the serial run depends on order: only the run's first divergence is shrunk. A task cannot know
whether a cell before it diverges, so the tasks do not shrink; once all are in, the first cell in the serial
order that diverged is played again by a task that shrinks what it finds, as the serial run did. That costs
one cell more (at most its time and check.SHRINK_SECONDS), where shrinking in every task that diverges would
cost SHRINK_SECONDS per diverging cell: a broken implementation still fails about as fast as a sound one passes.

A worker that dies mid-task (killed, out of memory, its machine gone) is Ray's to handle: the actor is
restarted (max_restarts), reloading its model, and the task is retried on it (max_task_retries); a task is
deterministic, so the retry gives the result the first try would have, and each task's result is taken once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import ray

from gentwin.conformance.check import Cell, _loaded, check_model, import_implementation
from gentwin.conformance.families import FAMILIES
from gentwin.errors import GentwinError

RETRIES = 3  # restarts of a dead actor, and retries of the task it was playing


@ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)
class ModelChecker:
    """The two implementations with one model folder loaded, playing that folder's families."""

    def __init__(self, impl_name: str, oracle_name: str, folder: str, search_path: str):
        sys.path.append(search_path)  # the driver's folder, which `python -m`-style --impl modules come from
        self.impl, self.oracle = import_implementation(impl_name), import_implementation(oracle_name)
        self.folder = Path(folder)
        for module in (self.impl, self.oracle):
            _loaded(module, self.folder)

    def check(self, family_name: str, examples: int, run_seed: int, shrink: bool) -> Cell:
        family = next(family for family in FAMILIES if family.name == family_name)
        return check_model(self.impl, self.oracle, self.folder, family, examples, run_seed, shrink)


def connect(address: str | None, workers: int) -> bool:
    """Join the cluster at ADDRESS, or start a local one of WORKERS CPUs in this process. True when this call
    started it (so it is this run's to shut down)."""
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    except ConnectionError as error:
        raise GentwinError(f"cannot join the Ray cluster at {address!r}: {error}") from error
    return True


def run_tasks(function, calls: list[tuple], workers: int, ray_address: str | None, progress) -> list:
    """FUNCTION(*CALL) for every CALL, each a Ray task of one CPU on the cluster at RAY_ADDRESS (or a local one
    of WORKERS, connect's), retried by Ray where the worker running it dies; the results in CALLS' order,
    PROGRESS(index, result) as each ends. The sweep's folders and the peer suite's test files run this way."""
    started_here = connect(ray_address, workers)
    try:
        task = ray.remote(num_cpus=1, max_retries=RETRIES)(function)
        pending = {task.remote(*call): index for index, call in enumerate(calls)}
        results = [None] * len(calls)
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done)
            results[index] = ray.get(done)
            progress(index, results[index])
        return results
    finally:
        if started_here:
            ray.shutdown()


def check_cells(impl_name: str, oracle_name: str, model_dirs: list[Path], examples: int, run_seed: int,
                progress) -> dict:
    """The cells of every model x family, in the serial run's order, played on the connected Ray cluster;
    PROGRESS(model, family, cell, done, total) as each task finishes."""
    folders = {folder.name: folder for folder in model_dirs}
    checkers, pending = {}, {}
    for model, folder in folders.items():
        checkers[model] = checker(impl_name, oracle_name, folder)
        for family in FAMILIES:
            pending[checkers[model].check.remote(family.name, examples, run_seed, False)] = model, family.name
    total, cells = len(pending), {}
    left = {model: len(FAMILIES) for model in checkers}
    while pending:
        [done], _ = ray.wait(list(pending), num_returns=1)
        model, family = pending.pop(done)
        cells[model, family] = result(done, model, family)
        progress(model, family, cells[model, family], len(cells), total)
        left[model] -= 1
        if not left[model]:
            ray.kill(checkers.pop(model))  # frees its CPU for a model still waiting for one
    ordered = {(model, family.name): cells[model, family.name] for model in folders for family in FAMILIES}
    first = next((key for key, cell in ordered.items() if cell.failure), None)
    if first:
        model, family = first
        shrinking = checker(impl_name, oracle_name, folders[model]).check.remote(family, examples, run_seed, True)
        ordered[first] = result(shrinking, model, family)
    return ordered


def checker(impl_name: str, oracle_name: str, folder: Path):
    return ModelChecker.remote(impl_name, oracle_name, str(folder.resolve()), os.getcwd())


def result(task, model: str, family: str) -> Cell:
    try:
        return ray.get(task)
    except ray.exceptions.RayActorError as error:  # its worker died once more than it is restarted
        raise GentwinError(f"the Ray worker checking {model} / {family} is gone (Ray restarts a dead one "
                           f"{RETRIES} times): {error}") from error
