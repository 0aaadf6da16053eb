"""The intra-op thread count of the peer's session, which both engines take: gentwin.fast for onnxruntime,
gentwin.reference for numpy's BLAS during a run; and the worker count of a run on Ray (--workers)."""

from __future__ import annotations

import argparse
import os


def peer_intra_op_threads(session_options: dict | None = None) -> int:
    """genai_config.json's session_options.intra_op_num_threads where it sets one above 0, else the peer's
    default (its CreateSessionOptionsFromConfig): half the logical CPUs, 1 to 16, as if every core ran two
    hardware threads."""
    configured = (session_options or {}).get("intra_op_num_threads", 0)
    return configured if configured > 0 else max(1, min(16, (os.cpu_count() or 1) // 2))


def worker_count(text: str) -> int:
    """--workers' value: a number, or 'auto' for the cores free now (this process's cores less the load
    average, at least 1: serial). Workers beyond the free cores only take turns on them, at Ray's cost on top:
    on a loaded 2-core machine a 2-worker run was slower than the serial one (README, Running on a cluster)."""
    if text == "auto":
        return max(1, len(os.sched_getaffinity(0)) - round(os.getloadavg()[0]))
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number or 'auto', not {text!r}") from None
