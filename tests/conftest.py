"""Model folders the tests run on: the committed fixtures, and ../shared/models when it is beside the repo."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MODELS = REPO.parent / "shared" / "models"
FIXTURE_MODELS = REPO / "fixtures" / "models"


def _model_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*") if (p / "genai_config.json").is_file()) if root.is_dir() else []


def shared_model(name: str) -> Path:
    path = SHARED_MODELS / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (../shared/models is not beside this checkout)")
    return path


# Both engines run every comparison with the peer: `@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)`.
ENGINE_IDS = ["reference", "fast"]
ENGINES = [importlib.import_module(f"gentwin.{name}") for name in ENGINE_IDS]

MODEL_DIRS = _model_dirs(SHARED_MODELS) + _model_dirs(FIXTURE_MODELS)
MODEL_IDS = [f"{p.parent.parent.name}/{p.name}" for p in MODEL_DIRS]


@functools.lru_cache(maxsize=None)
def load(module_name: str, path: str):
    """One Model per (implementation, folder) for the whole session: loading is the slow part."""
    return importlib.import_module(module_name).Model(path)


def _built_on_demand(tmp_path_factory, size: str) -> dict[str, Path]:
    from gentwin.fixtures.build import build

    return {Path(folder).name: Path(folder) for folder in build(str(tmp_path_factory.mktemp(size)), size=size)}


@pytest.fixture(scope="session")
def text_models(tmp_path_factory) -> dict[str, Path]:
    """Fixture models whose generated text always decodes (gentwin.fixtures.layouts.TEXT), built once."""
    return _built_on_demand(tmp_path_factory, "text")


@pytest.fixture(scope="session")
def lora_models(tmp_path_factory) -> dict[str, Path]:
    """Text models that take LoRA adapters (gentwin.fixtures.layouts.LORA), built once per session."""
    return _built_on_demand(tmp_path_factory, "lora")
