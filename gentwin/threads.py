"""The intra-op thread count of the peer's session, which both engines take: gentwin.fast for onnxruntime,
gentwin.reference for numpy's BLAS during a run."""

from __future__ import annotations

import os


def peer_intra_op_threads(session_options: dict | None = None) -> int:
    """genai_config.json's session_options.intra_op_num_threads where it sets one above 0, else the peer's
    default (its CreateSessionOptionsFromConfig): half the logical CPUs, 1 to 16, as if every core ran two
    hardware threads."""
    configured = (session_options or {}).get("intra_op_num_threads", 0)
    return configured if configured > 0 else max(1, min(16, (os.cpu_count() or 1) // 2))
