"""`make sweep`: build the official builder's output for every family (tools/sweep/catalogue.py), then play
each folder on onnxruntime-genai, gentwin.fast and gentwin.reference and print the verdicts.

    python -m tools.sweep [build|play|all] [--only NAME ...] [--json FILE] [--models DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tools.sweep.catalogue import builds

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "sweep-models"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("stage", nargs="?", choices=("build", "play", "all"), default="all")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="folder names, or family names")
    parser.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON to FILE")
    parser.add_argument("--models", type=Path, default=DEFAULT_ROOT, help="where the folders are built")
    args = parser.parse_args(argv)
    selected = [build for build in builds()
                if not args.only or build.name in args.only or build.family.name in args.only]
    if not selected:
        parser.error(f"--only matches no build: {' '.join(args.only)}")
    if args.stage in ("build", "all"):
        from tools.sweep.build import build_all
        build_all(selected, args.models)
    if args.stage in ("play", "all"):
        from tools.sweep.play import play_all
        play_all(selected, args.models, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
