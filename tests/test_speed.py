"""gentwin.fast's threads, next to the peer's, and `make bench` end to end (its structure, never its speed)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gentwin.fast as fast
from gentwin import bench
from tests.conftest import FIXTURE_MODELS

LLAMA = FIXTURE_MODELS / "llama-fp32"

# Threads that loading one more model starts, for the peer then for gentwin.fast, in one process: the threads
# onnxruntime starts for the session's intra-op pool (the peer's first model also starts process-wide ones).
THREADS_STARTED = """
import os, sys
import onnxruntime_genai, gentwin.fast
threads = lambda: len(os.listdir("/proc/self/task"))
onnxruntime_genai.Model(sys.argv[1])
started, models = [], []
for load in (onnxruntime_genai.Model, gentwin.fast.Model):
    before = threads()
    models.append(load(sys.argv[1]))
    started.append(threads() - before)
print(started)
"""


def with_session_options(folder: Path, tmp_path: Path, **session_options) -> Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    config = json.loads((target / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"].update(session_options)
    (target / "genai_config.json").write_text(json.dumps(config))
    return target


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
@pytest.mark.parametrize("session_options", [{}, {"intra_op_num_threads": 2}], ids=["default", "two threads"])
def test_fast_starts_as_many_intra_op_threads_as_the_peer(tmp_path, session_options):
    folder = with_session_options(LLAMA, tmp_path, **session_options)
    result = subprocess.run([sys.executable, "-c", THREADS_STARTED, str(folder)], capture_output=True, text=True,
                            check=True)
    peer, ours = json.loads(result.stdout)
    assert ours == peer


def test_spinning_set_in_genai_config_reaches_the_session(tmp_path):
    folder = with_session_options(LLAMA, tmp_path, **{"session.intra_op.allow_spinning": "0"})
    options = fast.Model(str(folder)).graph.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"



@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="the bench's plot needs matplotlib")
def test_quick_bench_prints_its_table_and_writes_its_plot(tmp_path):
    plot, rows_file = tmp_path / "bench.png", tmp_path / "rows.json"
    result = subprocess.run([sys.executable, "-m", "gentwin.bench", "--quick", "--plot", str(plot),
                             "--json", str(rows_file)], capture_output=True, text=True, check=True)
    written = json.loads(rows_file.read_text())
    rows, speculative = written["rows"], written["speculative"]
    measured = {(row["condition"], row["engine"]) for row in rows}
    assert {(condition, engine) for condition in bench.CONDITIONS for engine in bench.ENGINES} <= measured
    peer = {row["condition"]: row for row in rows if row["engine"] == bench.PEER}
    for row in rows:
        assert all(row[key] > 0 for key in ("ttft_ms", "decode_tps", "peak_rss_mb")), row
        assert row["decode_vs_peer"] == pytest.approx(row["decode_tps"] / peer[row["condition"]]["decode_tps"])
        assert row["ttft_vs_peer"] == pytest.approx(row["ttft_ms"] / peer[row["condition"]]["ttft_ms"])
    table_rows = [line for line in result.stdout.splitlines() if line.startswith(f"| {bench.QUICK_MODEL.name} |")]
    assert len(table_rows) == len(rows)
    assert "host work" in result.stdout
    assert {(row["prompt"], row["drafting"], row["engine"]) for row in speculative} == {
        (prompt, drafting, engine) for prompt in bench.SPECULATIVE_PROMPTS for drafting in bench.DRAFTINGS
        for engine in bench.ENGINES}
    speed = {(row["prompt"], row["drafting"], row["engine"]): row["decode_tps"] for row in speculative}
    for row in speculative:
        assert row["decode_tps"] > 0 and (row["acceptance"] is None) == (row["drafting"] == "none"), row
        assert row["acceptance"] is None or 0 <= row["acceptance"] <= 1, row
        assert row["vs_no_drafts"] == pytest.approx(row["decode_tps"] / speed[row["prompt"], "none", row["engine"]])
        assert row["vs_peer"] == pytest.approx(row["decode_tps"] / speed[row["prompt"], row["drafting"], bench.PEER])
    assert len([line for line in result.stdout.splitlines()
                if line.startswith(tuple(f"| {prompt} |" for prompt in bench.SPECULATIVE_PROMPTS))]) == len(speculative)
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
