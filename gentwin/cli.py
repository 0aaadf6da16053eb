"""The `gentwin` command.

Exit status: 0 when done; 1 when `gentwin check` finds a divergence; 2 for a user error (a missing or invalid
model folder, a bad option value, a chat template that is missing or broken), told in one line on stderr,
"gentwin: error: ..."; 130 (128 + SIGINT, as shells report) when Ctrl-C ends it, but for `gentwin serve`,
which Ctrl-C stops as it should be stopped (uvicorn's graceful shutdown): 0.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import socket
import sys
from pathlib import Path

from gentwin.chat.client import DEFAULT_ENGINE, ENGINES
from gentwin.errors import GentwinError
from gentwin.threads import worker_count

USER_ERROR = 2
INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors told in one line like gentwin's others (argparse prints the usage first)."""

    def error(self, message: str):
        self.exit(USER_ERROR, f"gentwin: error: {message} (see: {self.prog} --help)\n")


def model_folder(path: str) -> Path:
    """PATH, once genai_config.json there reads as a model's: a typo fails at once, not after a long load."""
    from gentwin.config import load_config

    try:
        load_config(path)
    except GentwinError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return Path(path)


def port_number(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in [1, 65535], got {port}")
    return port


def check_listen_address(host: str, port: int) -> None:
    """Bind HOST:PORT once and let go, so that a port in use or an unknown host is told in one line before the
    model loads (uvicorn would log it after, and exit 3)."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's own socket
            probe.bind(address)
    except OSError as error:
        raise GentwinError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def progress_bar(items, **options):
    from tqdm import tqdm

    return tqdm(items, leave=False, **options)


def model_or_default(model_dir: Path | None) -> Path:
    """MODEL_DIR, or when none is named the default model, imported into the cache on first use."""
    from gentwin.gguf_import import default_model

    return model_dir or default_model(progress=progress_bar)


def version() -> str:
    try:
        return f"gentwin {importlib.metadata.version('gentwin')}"
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "gentwin (not installed)"


def main(argv=None) -> int:
    """Run the command ARGV says (default: sys.argv); return its exit status, user errors told in one line."""
    try:
        return run(argv)
    except GentwinError as error:  # what gentwin raises for input it refuses
        print(f"gentwin: error: {error}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("\ngentwin: interrupted", file=sys.stderr)
        return INTERRUPTED


def run(argv=None) -> int:
    parser = OneLineParser(prog="gentwin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=version())
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="compare an implementation's token streams with an oracle's")
    check.add_argument("--impl", default="gentwin.fast", help="module offering the onnxruntime-genai API")
    check.add_argument("--oracle", default="gentwin.reference", help="module whose streams are the truth")
    check.add_argument("--model", action="append", type=model_folder,
                       help="model folder (repeatable); default: fixtures")
    check.add_argument("--examples", type=int, default=None,
                       help="scenarios hypothesis generates per model and family, besides the fixed ones "
                            "(default 25, about a minute of CPU time on the bundled fixtures)")
    check.add_argument("--seed", type=int, default=0, help="seed of the generated scenarios (same seed, same run)")
    check.add_argument("--workers", type=worker_count, default=1, metavar="N|auto",
                       help="above 1: play the models and families on a local Ray cluster of N workers, started "
                            "here (needs ray: pip install 'gentwin[ray]'); auto: as many as cores are free now "
                            "(cores less the load average); default 1, serial, without Ray")
    check.add_argument("--ray-address", metavar="ADDRESS",
                       help="play them on the running Ray cluster at ADDRESS ('auto': the one this machine "
                            "belongs to); the model folders must be at the same path on its machines")
    check.add_argument("--json", metavar="FILE", type=Path, help="also write the results to FILE as JSON")
    check.add_argument("--junit-xml", metavar="FILE", type=Path,
                       help="also write them to FILE as JUnit XML (a suite per model, a case per family)")

    commands.add_parser("demo", help="gentwin check on SmolLM2-135M-Instruct, then a short chat with it")

    import_gguf = commands.add_parser("import-gguf",
                                      help="a GGUF checkpoint (llama, mistral, qwen2) as a model folder, without torch")
    import_gguf.add_argument("gguf_file", help="the .gguf file")
    import_gguf.add_argument("out_dir", help="the model folder to write")
    import_gguf.add_argument("--precision", choices=("fp32", "int4"), default="fp32",
                             help="fp32 (dequantized weights) or int4 (MatMulNBits, as the official builder's -p int4)")

    serve = commands.add_parser("serve", help="Cohere's chat and generate HTTP API on a model folder")
    chat = commands.add_parser("chat", help="chat with a model in the terminal (/undo, /reset, /quit)")
    for command in (serve, chat):
        command.add_argument("model_dir", type=model_folder, nargs="?",
                             help="model folder (genai_config.json, model.onnx, tokenizer); "
                                  "default: SmolLM2-135M-Instruct, imported once into a cache")
        command.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                             help=f"gentwin engine (default: {DEFAULT_ENGINE})")
        command.add_argument("--presets", help="presets file (default: $XDG_CONFIG_HOME/gentwin/presets.json)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port_number, default=8000)
    serve.add_argument("--max-body-bytes", type=int, help="largest request body (default 1 MiB)")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--chat-template", metavar="FILE",
                      help="a Jinja chat template file, used instead of the model folder's")
    chat.add_argument("--preset", help="name of a preset of options")
    chat.add_argument("--max-tokens", type=int,
                      help="most tokens per reply (default: until the model ends it or the context is full)")
    chat.add_argument("--temperature", type=float, help="0 is greedy (default 0.3)")
    chat.add_argument("--seed", type=int, help="seed of the sampling")

    args = parser.parse_args(argv)
    if args.command == "check":
        from gentwin.conformance.check import DEFAULT_EXAMPLES, bundled_models, check as run_check

        examples = DEFAULT_EXAMPLES if args.examples is None else args.examples
        passed = run_check(args.impl, args.oracle, args.model or bundled_models(), examples, args.seed,
                           workers=args.workers, ray_address=args.ray_address, json_file=args.json,
                           junit_file=args.junit_xml)
        return 0 if passed else 1
    if args.command == "import-gguf":
        from gentwin.gguf_import import import_gguf as convert

        print(convert(args.gguf_file, args.out_dir, args.precision, progress=progress_bar))
        return 0
    if args.command == "demo":
        from gentwin.demo import main as demo

        return demo()
    if args.command == "serve":
        from gentwin.serve import serve as run_server

        check_listen_address(args.host, args.port)
        run_server(model_or_default(args.model_dir), args.engine, args.host, args.port, args.presets,
                   args.max_body_bytes)
        return 0
    from gentwin.chat_cli import run as run_chat  # "chat", the last of the required subcommands

    args.model_dir = model_or_default(args.model_dir)
    return run_chat(args)


if __name__ == "__main__":
    sys.exit(main())
