"""`gentwin check` on Ray: every model x family is a task, played by one actor per model.

Each actor imports the two implementations and loads the model folder once (check._loaded), then plays its
families one task at a time; the folder travels by path, so a cluster needs the folders on shared storage at
the same path. A cell's scenarios depend only on the run's seed, the folder's name and the family
(check._cell_seed), so a task gives the cell the serial run gives, whichever worker plays it and whenever.

One thing in the serial run depends on order: only the run's first divergence is shrunk. A task cannot know
whether a cell before it diverges, so every task shrinks the divergence it finds and also keeps it as first
found (Cell.found); once all are in, the first cell in the serial order keeps its shrunk one and every later
cell reports its divergence as found, as the serial run does. A diverging task therefore spends up to
check.SHRINK_SECONDS more than it would serially, on its own worker.

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

    def check(self, family_name: str, examples: int, run_seed: int) -> Cell:
        family = next(family for family in FAMILIES if family.name == family_name)
        return check_model(self.impl, self.oracle, self.folder, family, examples, run_seed, shrink=True)

    def pid(self) -> int:
        return os.getpid()


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


def check_cells(impl_name: str, oracle_name: str, model_dirs: list[Path], examples: int, run_seed: int,
                progress) -> dict:
    """The cells of every model x family, in the serial run's order, played on the connected Ray cluster;
    PROGRESS(model, family, cell, done, total) as each task finishes."""
    checkers, pending = {}, {}
    for folder in model_dirs:
        checker = ModelChecker.remote(impl_name, oracle_name, str(folder.resolve()), os.getcwd())
        checkers[folder.name] = checker
        for family in FAMILIES:
            pending[checker.check.remote(family.name, examples, run_seed)] = folder.name, family.name
    total, cells = len(pending), {}
    left = {model: len(FAMILIES) for model in checkers}
    while pending:
        [done], _ = ray.wait(list(pending), num_returns=1)
        model, family = pending.pop(done)
        try:
            cells[model, family] = ray.get(done)
        except ray.exceptions.RayActorError as error:  # its worker died once more than it is restarted
            raise GentwinError(f"the Ray worker checking {model} / {family} is gone (Ray restarts a dead one "
                               f"{RETRIES} times): {error}") from error
        progress(model, family, cells[model, family], len(cells), total)
        left[model] -= 1
        if not left[model]:
            ray.kill(checkers.pop(model))  # frees its CPU for a model still waiting for one
    ordered = {(folder.name, family.name): cells[folder.name, family.name]
               for folder in model_dirs for family in FAMILIES}
    return first_divergence_shrunk(ordered)


def first_divergence_shrunk(cells: dict) -> dict:
    """CELLS (in the serial order) as the serial run reports them: the first divergence shrunk, later ones as
    found."""
    first = next((key for key, cell in cells.items() if cell.failure), None)
    keys = list(cells)
    for key in keys[keys.index(first) + 1:] if first else ():
        cells[key].failure = cells[key].found
    return cells
