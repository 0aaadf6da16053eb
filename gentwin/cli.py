"""The `gentwin` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gentwin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="compare an implementation's token streams with an oracle's")
    check.add_argument("--impl", default="onnxruntime_genai", help="module offering the onnxruntime-genai API")
    check.add_argument("--oracle", default="gentwin.reference", help="module whose streams are the truth")
    check.add_argument("--model", action="append", type=Path, help="model folder (repeatable); default: fixtures")

    commands.add_parser("demo", help="gentwin check on a bundled fixture, then a short chat")

    args = parser.parse_args(argv)
    if args.command == "check":
        from gentwin.conformance.check import bundled_models, check as run_check

        return 0 if run_check(args.impl, args.oracle, args.model or bundled_models()) else 1
    if args.command == "demo":
        from gentwin.demo import main as demo

        return demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
