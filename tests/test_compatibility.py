"""Programs written for onnxruntime-genai run unchanged on gentwin: the same output, character for character.

Each program in tests/compat_programs/ is written the way onnxruntime-genai's own examples are (a
question-answer loop, a chat with a cached system prompt, a batch, LoRA adapters switched between
generators) and imports `onnxruntime_genai as og`. The test swaps that one line for
`import gentwin.reference as og` or `import gentwin.fast as og`, runs the program in this process with
its arguments and standard input, and compares what it prints with what the peer's run prints.

The README's compatibility table is checked here too: it names every public name of the peer's module,
and the status it gives each one agrees with what gentwin.reference has.
"""

from __future__ import annotations

import enum
import functools
import io
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

import pytest

import gentwin.reference
from gentwin.fixtures.adapters import random_lora_weights, write_adapter_file
from tests.conftest import ENGINE_IDS, ENGINES, REPO

peer = pytest.importorskip("onnxruntime_genai")

PROGRAMS = Path(__file__).parent / "compat_programs"
PEER_IMPORT = "import onnxruntime_genai as og"
STDIN = {
    "qa.py": "What is a tiny model?\n\nTell me about tests.\nHéllo 🙂\n",
    "chat.py": "Hello there\nWhat can you do?\nAnd again, shorter\nquit()\n",
    "batch.py": "The model is small.\nTests should be quick, and nobody waits\nHi\n",
    "adapters.py": "The reference is the oracle\nA second line\n",
}
# The models are the fixtures' text variants: random models otherwise emit lone bytes of multi-byte
# characters, which the peer's decoders drop or truncate where gentwin's replace them (README, "Differences").
CASES = [("qa.py", "llama-text-fp32"), ("chat.py", "llama-text-fp32"), ("chat.py", "mistral-mha-text-fp32"),
         ("batch.py", "llama-text-fp32"), ("batch.py", "qwen2-text-int4")]


def run_program(program: str, module: str, argv: list[str]) -> str:
    """What PROGRAM prints when it imports MODULE as og, with ARGV and its standard input STDIN[program]."""
    path = PROGRAMS / program
    source = path.read_text(encoding="utf-8")
    assert source.count(PEER_IMPORT) == 1, f"{program} must import the peer exactly once, as `{PEER_IMPORT}`"
    code = compile(source.replace(PEER_IMPORT, f"import {module} as og"), str(path), "exec")
    printed = io.StringIO()
    with (mock.patch.object(sys, "argv", [str(path), *argv]),
          mock.patch.object(sys, "stdin", io.StringIO(STDIN[program])),
          redirect_stdout(printed)):
        exec(code, {"__name__": "__main__"})
    return printed.getvalue()


@functools.lru_cache(maxsize=None)
def peer_output(program: str, argv: tuple[str, ...]) -> str:
    return run_program(program, peer.__name__, list(argv))


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("program, model", CASES, ids=[f"{p[:-3]}-{m}" for p, m in CASES])
def test_a_program_prints_what_it_prints_on_the_peer(engine, program, model, text_models):
    argv = ("-m", str(text_models[model]))
    expected = peer_output(program, argv)
    assert expected.count("\n") >= 6 and len(set(expected.split())) >= 20, expected  # a real conversation
    assert run_program(program, engine.__name__, list(argv)) == expected


@pytest.fixture(scope="module")
def adapter_arguments(lora_models, tmp_path_factory) -> tuple[str, ...]:
    folder = lora_models["llama-lora-fp32"]
    out = tmp_path_factory.mktemp("compat-adapters")
    specs = []
    for name, seed in (("formal", 21), ("casual", 22)):
        path = write_adapter_file(str(out / f"{name}.onnx_adapter"), random_lora_weights(str(folder), 4, seed))
        specs += ["-a", f"{name}={path}"]
    return ("-m", str(folder), *specs)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_the_adapter_program_prints_what_it_prints_on_the_peer(engine, adapter_arguments):
    expected = peer_output("adapters.py", adapter_arguments)
    replies = [line.split("] ", 1)[1] for line in expected.splitlines() if line.startswith("[")]
    assert len(replies) == 6 and len(set(replies)) == 6, expected  # base and two adapters differ, twice
    assert run_program("adapters.py", engine.__name__, list(adapter_arguments)) == expected


# -- the public names ---------------------------------------------------------------------------------

# gentwin's own exception class: not a name of the peer, so not in the README's table.
GENTWIN_ONLY_NAMES = {"GentwinError"}


def _expected_engine_names() -> set[str]:
    """The peer's public names, less those the README's table marks "no", plus its top-level "extension"s."""
    rows = _readme_table()
    top_level = {name: status for name, (status, _) in rows.items() if "." not in name}
    return ({name for name in _peer_names() if top_level.get(name) != "no"}
            | {name for name, status in top_level.items() if status == "extension"} | GENTWIN_ONLY_NAMES)


@pytest.mark.parametrize("engine", ENGINES, ids=ENGINE_IDS)
def test_an_engine_exports_the_public_names(engine):
    expected = _expected_engine_names()
    assert {"Model", "Tokenizer", "Generator", "is_cuda_available"} <= expected  # the table was read
    assert sorted(engine.__all__) == sorted(expected)
    assert all(hasattr(engine, name) for name in engine.__all__)


def _peer_names() -> dict[str, list[str]]:
    """Every public name of the peer's module; for a class, its public members."""
    names = {}
    for name in dir(peer):
        value = getattr(peer, name)
        if name.startswith("_") or name == "onnxruntime_genai":
            continue
        names[name] = [member for member in dir(value) if not member.startswith("_")] if isinstance(value, type) else []
    return names


def _readme_table() -> dict[str, tuple[str, str]]:
    """The compatibility table of README.md: name -> (status, notes)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Compatibility with onnxruntime-genai's Python API", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            match = re.fullmatch(r"\| `([\w.]+)` \| (\w+) \|(.*)\|", line)
            assert match, f"README compatibility table: cannot read the row {line!r}"
            rows[match.group(1)] = (match.group(2), match.group(3).strip())
    return rows


def _has(module, dotted: str) -> bool:
    """Whether MODULE has DOTTED: a name, or a class's member, which may be a field every instance gets (a
    dataclass's) or an attribute of every member of an enum (name, value)."""
    owner, _, member = dotted.partition(".")
    if not hasattr(module, owner):
        return False
    cls = getattr(module, owner)
    instance_attributes = set(getattr(cls, "__dataclass_fields__", ()))
    if isinstance(cls, enum.EnumMeta):
        instance_attributes |= {"name", "value"}
    return not member or hasattr(cls, member) or member in instance_attributes


def test_the_readme_table_names_every_public_name_of_the_peer():
    rows = _readme_table()
    for name, members in _peer_names().items():
        assert name in rows, f"README compatibility table lacks {name}"
        if rows[name][0] == "no":
            # A class gentwin does not have: one row, naming its members.
            assert all(f"`{member}`" in rows[name][1] for member in members), name
        else:
            missing = [member for member in members if f"{name}.{member}" not in rows]
            assert not missing, f"README compatibility table lacks {name}.{missing}"


def test_the_readme_tables_statuses_are_what_gentwin_has():
    rows = _readme_table()
    assert set(status for status, _ in rows.values()) <= {"yes", "differs", "extension", "no"}
    for name, (status, _) in rows.items():
        assert _has(gentwin.reference, name) == (status != "no"), f"{name}: README says {status}"
