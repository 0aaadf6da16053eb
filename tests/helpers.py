"""Helpers shared by several test files (model folders and engines are in tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tests.conftest import load


def env_with_stub_packages(folder: Path, *names: str) -> dict[str, str]:
    """This process's environment, with an empty package for each of NAMES first on PYTHONPATH.

    A subprocess run with it can import any of NAMES, even where the real package is not installed, so a
    guarded `try: import NAME except ImportError` shows up in its sys.modules as any other import does.
    """
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(f'"""A stand-in for {name}: any import of it must show."""\n')
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def new_generator(module, folder, prompt, **options):
    """A Generator of MODULE (an engine or the peer) on FOLDER's shared Model, with search OPTIONS and
    batch_size len(PROMPT), after appending PROMPT [batch, length]."""
    model = load(module.__name__, str(folder))
    params = module.GeneratorParams(model)
    params.set_search_options(batch_size=len(prompt), **options)
    generator = module.Generator(model, params)
    generator.append_tokens(np.array(prompt, dtype=np.int32))
    return generator


def finished_sequences(generator, rows: int = 1, count: int | None = None) -> list[list[int]]:
    """Generate until GENERATOR is done (or COUNT more tokens); every row's sequence."""
    while not generator.is_done() and (count is None or count > 0):
        generator.generate_next_token()
        count = None if count is None else count - 1
    return [[int(token) for token in generator.get_sequence(row)] for row in range(rows)]


def loaded_adapters(og, model, files: dict[str, str]):
    """OG's Adapters container for MODEL with FILES (name -> path) loaded under their names."""
    adapters = og.Adapters(model)
    for name, path in files.items():
        adapters.load(path, name)
    return adapters


# how far the logits of two runs that must agree (ours and the peer's, or two of ours) may differ
LOGITS_TOLERANCE = 1e-4


def assert_same_run(ours, theirs):
    """Two runs' (generated tokens, logits of every step): the same tokens, logits within LOGITS_TOLERANCE."""
    assert ours[0] == theirs[0]
    np.testing.assert_allclose(ours[1], theirs[1], atol=LOGITS_TOLERANCE, rtol=0)
