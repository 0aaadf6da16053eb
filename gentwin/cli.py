"""The `gentwin` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gentwin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="compare an implementation's token streams with an oracle's")
    check.add_argument("--impl", default="gentwin.fast", help="module offering the onnxruntime-genai API")
    check.add_argument("--oracle", default="gentwin.reference", help="module whose streams are the truth")
    check.add_argument("--model", action="append", type=Path, help="model folder (repeatable); default: fixtures")
    check.add_argument("--examples", type=int, default=None,
                       help="scenarios hypothesis generates per model and family, besides the fixed ones "
                            "(default: about half a minute's worth on the bundled fixtures)")
    check.add_argument("--seed", type=int, default=0, help="seed of the generated scenarios (same seed, same run)")

    commands.add_parser("demo", help="gentwin check on a bundled fixture, then a short chat")

    serve = commands.add_parser("serve", help="Cohere's chat and generate HTTP API on a model folder")
    chat = commands.add_parser("chat", help="chat with a model in the terminal (/undo, /reset, /quit)")
    for command in (serve, chat):
        command.add_argument("model_dir", help="model folder (genai_config.json, model.onnx, tokenizer)")
        command.add_argument("--engine", default="fast", help="gentwin engine: fast (default) or reference")
        command.add_argument("--presets", help="presets file (default: $XDG_CONFIG_HOME/gentwin/presets.json)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--preset", help="name of a preset of options")
    chat.add_argument("--max-tokens", type=int, default=256, help="most tokens per reply (default 256)")
    chat.add_argument("--temperature", type=float, help="0 is greedy (default 0.3)")
    chat.add_argument("--seed", type=int, help="seed of the sampling")

    args = parser.parse_args(argv)
    if args.command == "check":
        from gentwin.conformance.check import DEFAULT_EXAMPLES, bundled_models, check as run_check

        examples = DEFAULT_EXAMPLES if args.examples is None else args.examples
        return 0 if run_check(args.impl, args.oracle, args.model or bundled_models(), examples, args.seed) else 1
    if args.command == "demo":
        from gentwin.demo import main as demo

        return demo()
    if args.command == "serve":
        from gentwin.serve import serve as run_server

        run_server(args.model_dir, args.engine, args.host, args.port, args.presets)
        return 0
    from gentwin.chat_cli import run as run_chat  # "chat", the last of the required subcommands

    return run_chat(args)


if __name__ == "__main__":
    sys.exit(main())
