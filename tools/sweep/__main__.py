"""`make sweep`: build the official builder's output for every family (tools/sweep/catalogue.py), then play
each folder on onnxruntime-genai, gentwin.fast and gentwin.reference and print the verdicts.

    python -m tools.sweep [build|play|all] [--only NAME ...] [--json FILE] [--models DIR]
                          [--workers N | --ray-address ADDRESS]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gentwin.errors import GentwinError
from gentwin.threads import worker_count
from tools.sweep.catalogue import builds

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "sweep-models"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("stage", nargs="?", choices=("build", "play", "all"), default="all")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="folder names, or family names")
    parser.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON to FILE")
    parser.add_argument("--models", type=Path, default=DEFAULT_ROOT, help="where the folders are built")
    parser.add_argument("--workers", type=worker_count, default=1, metavar="N|auto",
                        help="play: above 1, the folders as tasks on a local Ray cluster of N workers (needs ray); "
                             "auto: the cores free now")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="play: the folders as tasks on the running Ray cluster at ADDRESS ('auto')")
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
        try:
            play_all(selected, args.models, args.json, args.workers, args.ray_address)
        except GentwinError as error:
            parser.error(str(error))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
