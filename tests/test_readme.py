"""Every code block of README.md runs as a user following the README runs it: from the repository root, in the
README's order (a python block may need what an sh line before it wrote, or the server it started), with the
venv's commands on PATH.

A block written for `import gentwin.reference as og` also runs as `import gentwin.fast as og`, and must print
the same; and on onnxruntime_genai itself, printing the same where the text is valid UTF-8 (a stream decoding
a lone byte of a character differs on purpose: README, TokenizerStream.decode). (The chat Client's block
samples with a fresh seed, as Cohere's defaults say: its two runs may differ on one engine.)
"""

from __future__ import annotations

import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
REFERENCE_OG = "import gentwin.reference as og"
FAST_OG = "import gentwin.fast as og"
PEER_OG = "import onnxruntime_genai as og"
# The sh lines no test runs, and why. Every other sh line of the README runs, in order, before the python blocks.
NOT_RUN = {"make test": "is this test suite"}
# Lines run otherwise, and why: `make demo` would reinstall gentwin into the venv these tests run in whenever
# pyproject.toml is newer than the last install; its demo runs all the same.
INSTEAD = {"make demo": "make --old-file=.venv/.installed demo"}
SNIPPET_SECONDS = 120  # a bound for a hung snippet, never reached by a working one
PORT = re.compile(r"--port (\d+)")


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block of README.md, in order."""
    return [(match[1], match[2]) for match in BLOCK.finditer(README.read_text(encoding="utf-8"))]


def sh_lines() -> list[str]:
    return [line.strip() for language, text in readme_blocks() if language == "sh"
            for line in text.splitlines() if line.strip()]


def command_of(line: str) -> str:
    return line.split("#", 1)[0].strip()


def python_blocks() -> list[str]:
    return [text for language, text in readme_blocks() if language == "python"]


def environment() -> dict[str, str]:
    """This process's, with the venv's commands first on PATH (as after `make`)."""
    return {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}


def run(args: list[str]) -> subprocess.CompletedProcess:
    """ARGS run from the repository root, at the end of their input (so `gentwin chat` leaves as at Ctrl-D)."""
    return subprocess.run(args, cwd=REPO, env=environment(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=SNIPPET_SECONDS)


def start_in_background(command: str) -> subprocess.Popen:
    """COMMAND (an sh line ending with &) started: once listening on its --port, or once it has exited."""
    port = int(PORT.search(command)[1])
    server = subprocess.Popen(["bash", "-c", command.removesuffix("&")], cwd=REPO, env=environment(),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # its own process group, stopped whole
    deadline = time.monotonic() + SNIPPET_SECONDS
    while True:
        if server.poll() is not None:
            return server
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            assert time.monotonic() < deadline, f"`{command}` is not listening on {port}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def followed_sh_lines():
    """Each sh line the tests run, run once in the README's order: line -> its CompletedProcess, or the running
    process of a line ending with & (stopped when the module's tests are done)."""
    done, servers = {}, []
    try:
        for line in sh_lines():
            command = command_of(line)
            if command in NOT_RUN:
                continue
            if command.endswith("&"):
                servers.append(start_in_background(command))
                done[line] = servers[-1]
            else:
                done[line] = run(["bash", "-c", INSTEAD.get(command, line)])
        yield done
    finally:
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(SNIPPET_SECONDS)
            server.stderr.close()


@functools.lru_cache(maxsize=None)
def run_python(block: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-c", block])


def test_every_block_is_sh_or_python():
    languages = [language for language, _ in readme_blocks()]
    assert languages and set(languages) <= {"sh", "python"}, languages
    assert python_blocks() and sh_lines()


def test_every_line_that_is_not_run_is_in_the_readme():
    assert set(NOT_RUN) | set(INSTEAD) <= {command_of(line) for line in sh_lines()}


@pytest.mark.parametrize("line", sh_lines())
def test_sh_line(line, followed_sh_lines):
    if command_of(line) in NOT_RUN:
        pytest.skip(f"`{command_of(line)}` is not run here: it {NOT_RUN[command_of(line)]}")
    done = followed_sh_lines[line]
    if isinstance(done, subprocess.Popen):
        assert done.poll() is None, f"`{line}` stopped, status {done.returncode}: {done.stderr.read()}"
    else:
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("index", range(len(python_blocks())), ids=lambda index: f"python-block-{index + 1}")
def test_python_block(index, followed_sh_lines):
    block = python_blocks()[index]
    done = run_python(block)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the block printed nothing"
    if REFERENCE_OG in block:
        fast = run_python(block.replace(REFERENCE_OG, FAST_OG))
        assert fast.returncode == 0, fast.stderr
        assert fast.stdout == done.stdout


def test_og_blocks_print_what_the_peer_prints(followed_sh_lines):
    valid_text = 0
    for block in python_blocks():
        if REFERENCE_OG in block:
            ours, peers = run_python(block), run_python(block.replace(REFERENCE_OG, PEER_OG))
            assert peers.returncode == 0, peers.stderr
            if "\ufffd" not in ours.stdout:
                assert peers.stdout == ours.stdout
                valid_text += 1
    assert valid_text, "no og block prints valid text: none was compared with the peer"
