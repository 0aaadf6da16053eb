"""The `gentwin` command as a user runs it, in a subprocess: a user error is one line on stderr naming the problem,
with exit status 2 and no traceback; `gentwin --version`; `gentwin chat` driven through its standard input,
its commands, --chat-template, end of input and Ctrl-C (SIGINT sent to the process)."""

from __future__ import annotations

import json
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib

import pytest

from tests.conftest import FIXTURE_MODELS, REPO

MODEL = FIXTURE_MODELS / "llama-fp32"
GENTWIN = [sys.executable, "-m", "gentwin.cli"]
SECONDS = 120  # a bound for a hung command, never reached by a working one
OUTPUT_SECONDS = 30  # likewise, for `gentwin chat` to write what a test waits for
UNKNOWN_COMMAND = "error: unknown command /foo; commands: /undo /reset /help /quit"
NOTHING_TO_UNDO = "nothing to undo"
# A template of its own, unlike the fixtures': what a chat renders with it differs from theirs.
OWN_TEMPLATE = ("{% for message in messages %}[{{ message['role'] }}] {{ message['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}[assistant] {% endif %}")


def gentwin(*args, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*GENTWIN, *map(str, args)], cwd=REPO, input=stdin, capture_output=True, text=True,
                          timeout=SECONDS)


def chat(*args, stdin: str = "") -> subprocess.CompletedProcess:
    """`gentwin chat` on the reference engine, greedy, short replies, with STDIN as what the user types."""
    return gentwin("chat", *args, "--engine", "reference", "--temperature", "0", "--max-tokens", "8", stdin=stdin)


def assert_user_error(done: subprocess.CompletedProcess, *named: str) -> None:
    """DONE failed as a user error: status 2, one line on stderr naming each of NAMED, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gentwin: error: "), done.stderr
    for name in named:
        assert name in lines[0]
    assert "Traceback" not in done.stdout


@pytest.fixture
def folder_without_template(tmp_path):
    """A copy of MODEL whose tokenizer_config.json has no chat template (nor any other file one)."""
    folder = tmp_path / "no-template"
    shutil.copytree(MODEL, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    del config["chat_template"]
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return folder


def with_template(folder, template: str, tmp_path):
    """A copy of FOLDER whose tokenizer_config.json holds TEMPLATE."""
    copy = tmp_path / "own-template"
    shutil.copytree(folder, copy)
    config_path = copy / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["chat_template"] = template
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return copy


# -- user errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, named", [
    (["check", "--model", "/nonexistent"], ["/nonexistent", "not found"]),
    (["check", "--model", FIXTURE_MODELS], ["genai_config.json", str(FIXTURE_MODELS)]),
    (["check", "--model", MODEL, "--impl", "no_such_module.engine"], ["no_such_module"]),
    (["check", "--model", MODEL, "--examples", "-1"], ["--examples"]),
    (["check", "--model", MODEL, "--workers", "0"], ["--workers"]),
    (["chat", "/nonexistent"], ["/nonexistent", "not found"]),
    (["serve", "/nonexistent"], ["/nonexistent", "not found"]),
    (["chat", MODEL, "--engine", "bogus"], ["--engine", "'bogus'", "fast", "reference"]),
    (["serve", MODEL, "--engine", "bogus"], ["--engine", "'bogus'", "fast", "reference"]),
    (["chat", MODEL, "--max-tokens", "0"], ["max_tokens"]),
    (["chat", MODEL, "--max-tokens", "many"], ["--max-tokens", "'many'"]),
    (["chat", MODEL, "--temperature", "-1"], ["temperature"]),
    (["chat", MODEL, "--seed", "-5"], ["seed"]),
    (["serve", MODEL, "--port", "70000"], ["port", "70000"]),
    (["chat", MODEL, "--chat-template", "/nonexistent.jinja"], ["--chat-template", "/nonexistent.jinja"]),
    (["bogus"], ["'bogus'"]),
    ([], ["command"]),
], ids=lambda value: " ".join(map(str, value)))
def test_a_user_error_is_one_line_and_status_2(args, named):
    assert_user_error(gentwin(*args), *named)


def test_a_port_in_use_is_a_user_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_user_error(gentwin("serve", MODEL, "--port", port), f"127.0.0.1:{port}", "in use")


def test_an_unknown_preset_is_a_user_error(tmp_path):
    assert_user_error(chat(MODEL, "--preset", "terse", "--presets", tmp_path / "presets.json"), "'terse'")


def test_chat_refuses_a_folder_without_a_chat_template_at_start(folder_without_template):
    done = chat(folder_without_template, stdin="Hello\n")
    assert_user_error(done, str(folder_without_template), "no chat template", "--chat-template")
    assert done.stdout == ""


def test_chat_refuses_a_broken_template_file_at_start(tmp_path):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for message in messages %}", encoding="utf-8")
    assert_user_error(chat(MODEL, "--chat-template", broken), str(broken), "syntax")


def test_chat_refuses_an_empty_template_file(tmp_path):
    empty = tmp_path / "empty.jinja"
    empty.write_text("\n", encoding="utf-8")
    assert_user_error(chat(MODEL, "--chat-template", empty), str(empty), "empty")


# -- --version and --help ----------------------------------------------------------------------------------------

def test_version_is_the_package_version():
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    done = gentwin("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"gentwin {version}\n", "")


@pytest.mark.parametrize("command", ["chat", "serve"])
def test_help_lists_the_engines(command):
    done = gentwin(command, "--help")
    assert done.returncode == 0 and "{fast,reference}" in done.stdout


# -- gentwin chat at its prompt -----------------------------------------------------------------------------

def finish_lines(stdout: str) -> list[str]:
    """The lines that end a reply, one per reply streamed."""
    return [line for line in stdout.splitlines() if line in ("(COMPLETE)", "(MAX_TOKENS)", "(STOP_SEQUENCE)")]


def test_an_unknown_command_is_refused_and_not_sent_to_the_model():
    done = chat(MODEL, stdin="/foo\n/undo\n")
    assert done.returncode == 0, done.stderr
    assert finish_lines(done.stdout) == []
    errors = done.stderr.splitlines()
    assert len(errors) == 2 and errors[0].startswith(UNKNOWN_COMMAND) and NOTHING_TO_UNDO in errors[1]


def test_a_line_beginning_with_two_slashes_is_said_with_one_and_a_slash_inside_a_line_is_no_command():
    done = chat(MODEL, stdin="//foo\nTell me about /foo\n/undo\n/undo\n/undo\n")
    assert done.returncode == 0, done.stderr
    assert len(finish_lines(done.stdout)) == 2
    assert done.stdout.count("(last turn forgotten)") == 2 and done.stderr.count(NOTHING_TO_UNDO) == 1


def test_end_of_input_leaves_with_status_0():
    done = chat(MODEL, stdin="")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(f"Chatting with {MODEL} on gentwin.reference.")


def test_the_chat_template_file_replaces_the_folders(folder_without_template, tmp_path):
    template_file = tmp_path / "own.jinja"
    template_file.write_text(OWN_TEMPLATE, encoding="utf-8")
    from_file = chat(folder_without_template, "--chat-template", template_file, stdin="Hello\n")
    from_folder = chat(with_template(folder_without_template, OWN_TEMPLATE, tmp_path), stdin="Hello\n")
    fixtures_own = chat(MODEL, stdin="Hello\n")
    assert from_file.returncode == 0, from_file.stderr
    assert len(finish_lines(from_file.stdout)) == 1
    reply = from_file.stdout.split("> ", 1)[1]
    assert reply == from_folder.stdout.split("> ", 1)[1]
    assert reply != fixtures_own.stdout.split("> ", 1)[1]


class ChatProcess:
    """`gentwin chat` running, its output read as it comes."""

    def __init__(self, *args):
        self.process = subprocess.Popen([*GENTWIN, "chat", str(MODEL), "--engine", "reference", "--temperature", "0",
                                         *args], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, bufsize=0)
        self.seen = b""

    def read_until(self, text: str) -> None:
        deadline = time.monotonic() + OUTPUT_SECONDS
        while not self.seen.endswith(text.encode()):
            self.read_some(deadline)

    def read_some(self, deadline: float | None = None) -> None:
        """One more byte of its output; fails, rather than waits for ever, when none comes by DEADLINE."""
        deadline = time.monotonic() + OUTPUT_SECONDS if deadline is None else deadline
        ready, _, _ = select.select([self.process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"gentwin chat wrote nothing more in {OUTPUT_SECONDS} s after {self.seen!r}"
        byte = self.process.stdout.read(1)
        assert byte, f"gentwin chat ended after writing {self.seen!r}"
        self.seen += byte

    def type(self, line: str) -> None:
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)

    def end(self) -> tuple[int, str]:
        """Close its input; its exit status and stderr."""
        self.process.stdin.close()
        self.seen += self.process.stdout.read()
        stderr = self.process.stderr.read().decode()
        return self.process.wait(SECONDS), stderr


@pytest.fixture
def chat_process(request):
    processes = []

    def start(*args):
        processes.append(ChatProcess(*args))
        return processes[-1]

    yield start
    for started in processes:
        if started.process.poll() is None:
            started.process.kill()
        started.process.wait(SECONDS)
        for stream in (started.process.stdin, started.process.stdout, started.process.stderr):
            stream.close()


def test_ctrl_c_at_the_prompt_leaves_with_status_130(chat_process):
    session = chat_process()
    session.read_until("> ")
    session.interrupt()
    status, stderr = session.end()
    assert (status, stderr) == (130, "")
    assert session.seen.endswith(b"> \n")


def test_ctrl_c_during_a_reply_stops_it_and_forgets_the_turn(chat_process):
    # A reply as long as the context allows, so that it is still streaming when the signal comes.
    session = chat_process("--max-tokens", "240")
    session.read_until("> ")
    session.type("Hello")
    session.read_some()
    session.interrupt()
    session.read_until("(interrupted: this turn is forgotten)\n> ")
    session.type("/undo")
    status, stderr = session.end()
    assert status == 0, stderr
    assert NOTHING_TO_UNDO in stderr and "Traceback" not in stderr
    assert finish_lines(session.seen.decode(errors="replace")) == []


def test_ctrl_c_during_a_check_leaves_with_status_130_and_no_traceback():
    checking = subprocess.Popen([*GENTWIN, "check", "--model", str(MODEL)], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    assert checking.stdout.readline().startswith("gentwin check: ")  # its scenarios are running now
    checking.send_signal(signal.SIGINT)
    stdout, stderr = checking.communicate(timeout=SECONDS)
    assert (checking.returncode, stderr) == (130, "\ngentwin: interrupted\n")


def test_ctrl_c_stops_a_server_gracefully_with_status_0():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([*GENTWIN, "serve", str(MODEL), "--engine", "reference", "--port", str(port)],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + SECONDS
    while server.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "gentwin serve is not listening"
            time.sleep(0.05)
    server.send_signal(signal.SIGINT)
    _, stderr = server.communicate(timeout=SECONDS)
    assert server.returncode == 0 and "Shutting down" in stderr and "Traceback" not in stderr, stderr
