"""`make peer-suite`: onnxruntime-genai's own Python tests on the peer, gentwin.reference and gentwin.fast.

Runs test_onnxruntime_genai_api.py and the models/ tests that call the API on onnxruntime_genai, then with
onnxruntime_genai answered by gentwin.reference and by gentwin.fast, and prints a per-test table.

    python -m tools.peer_suite PEER_CHECKOUT [build|run|all] [--engines ...] [--files ...] [--out DIR]
                               [--workers N | --ray-address ADDRESS]

PEER_CHECKOUT is a checkout of the peer's repository (its test/ folder is what is read); nothing of it is
copied into this repository. The CI stand-in models (tools/peer_suite/standins.py) are built once into
OUT/models with the official builder, which needs .venv-sweep (torch, transformers). The table is also
written to OUT/table.md and OUT/table.json, next to each run's JUnit XML (OUT/runs/ENGINE/junit). With
--workers N (N > 1) or --ray-address each engine x test file is a Ray task, with the serial run's table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gentwin.errors import GentwinError
from gentwin.threads import worker_count
from tools.peer_suite import run, standins, table

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "peer-suite"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.peer_suite", description=__doc__.splitlines()[0])
    parser.add_argument("peer", type=Path, help="a checkout of the onnxruntime-genai repository")
    parser.add_argument("stage", nargs="?", choices=("build", "run", "all"), default="all")
    parser.add_argument("--engines", nargs="+", choices=tuple(run.ENGINES), default=list(run.ENGINES))
    parser.add_argument("--files", nargs="+", metavar="FILE", help="test files, relative to test/python")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the stand-ins, the runs and the table")
    parser.add_argument("--workers", type=worker_count, default=1, metavar="N|auto",
                        help="run: above 1, engine x file tasks on a local Ray cluster of N workers (needs ray); "
                             "auto: the cores free now")
    parser.add_argument("--ray-address", metavar="ADDRESS",
                        help="run: engine x file tasks on the running Ray cluster at ADDRESS ('auto')")
    args = parser.parse_args(argv)
    peer = args.peer.resolve()
    if not (peer / "test" / "python" / "test_onnxruntime_genai_api.py").is_file():
        parser.error(f"{peer} is not a checkout of onnxruntime-genai: it has no test/python/test_onnxruntime_genai_api.py")
    models = args.out / "models"
    if args.stage in ("build", "all"):
        standins.build_all(models, peer / "test" / "models")
    if args.stage in ("run", "all"):
        files = args.files or run.test_files(peer / "test" / "python")
        try:
            results = run.run_all(args.engines, peer, models, args.out / "runs", files, args.workers,
                                  args.ray_address)
        except GentwinError as error:
            parser.error(str(error))
        print("\n" + table.text(results))
        table.write(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
