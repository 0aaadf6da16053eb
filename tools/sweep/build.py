"""Build the catalogue's folders with the official builder, once: a folder already built is skipped, and a
build that failed leaves FOLDER.failed with the builder's last words, which the table reports.

Each family's random-weight Hugging Face folder (sweep-models/hf/FAMILY) is made from its transformers
config with torch CPU; no weights are downloaded. Needs .venv-sweep (torch, transformers).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from tools.sweep.catalogue import Build, Family

REPO = Path(__file__).resolve().parents[2]
TOKENIZER_FOLDER = REPO / "fixtures" / "models" / "llama-fp32"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
BUILD_SECONDS = 600


def hf_folder(family: Family, root: Path, tokenizer: tuple[Path, ...] = ()) -> Path:
    """The family's Hugging Face folder (config, random weights, the tokenizer files TOKENIZER: the fixture
    tokenizer's by default), made once."""
    folder = root / "hf" / family.name
    if (folder / "config.json").is_file():
        return folder
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(family.model_type, **family.hf_config())
    architecture = family.architecture or transformers.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].__name__
    config.architectures = [architecture]
    torch.manual_seed(0)
    model = getattr(transformers, architecture)(config).eval()
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    if family.mxfp4_experts:
        from tools.sweep import mxfp4
        mxfp4.write_experts(model, staging)
    for path in tokenizer or tuple(TOKENIZER_FOLDER / name for name in TOKENIZER_FILES):
        shutil.copy(path, staging / path.name)
    staging.rename(folder)
    return folder


def failure_note(root: Path, build: Build) -> Path:
    return root / f"{build.name}.failed"


def build_one(build: Build, root: Path) -> str:
    """Build BUILD into ROOT/NAME unless it is there; return what happened, in a word or a line."""
    out = root / build.name
    if (out / "genai_config.json").is_file():
        return "cached"
    failed = failure_note(root, build)
    if failed.is_file():
        return "failed before: " + failed.read_text().strip()
    try:
        source = hf_folder(build.family, root)
    except Exception as error:  # a config transformers or torch refuses is a finding, reported per folder
        failed.write_text(f"transformers: {type(error).__name__}: {error}".splitlines()[0])
        return "failed: " + failed.read_text()
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out),
               "-p", build.precision, "-e", "cpu", "-c", str(root / "cache" / build.name)]
    if build.options:
        command += ["--extra_options", *build.options]
    log = root / "logs" / f"{build.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("w") as handle:
            done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=BUILD_SECONDS)
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = "timeout"
    shutil.rmtree(root / "cache" / build.name, ignore_errors=True)
    if code == 0 and (out / "genai_config.json").is_file():
        return "built"
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    failed.write_text(f"builder exit {code}: {lines[-1] if lines else 'no output'}")
    shutil.rmtree(out, ignore_errors=True)
    return "failed: " + failed.read_text()


def build_all(selected: list[Build], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for index, build in enumerate(selected, 1):
        started = time.perf_counter()
        outcome = build_one(build, root)
        print(f"[{index}/{len(selected)}] {build.name:<28} {outcome}  {time.perf_counter() - started:.0f}s",
              flush=True)
