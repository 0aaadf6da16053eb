"""What the harness needs to know about a model folder, read from the folder itself (any implementation's Model
will do): the special token ids, the vocabulary, and how closely two correct implementations' logits agree.

The logit tolerance is relative to the row's largest logit (at least 1), because fixtures with random weights
have logits up to ~20 and tiny exported models below 1:

    float models                               1e-5   (measured: < 2.5e-6 against onnxruntime-genai)
    MatMulNBits with accuracy_level 4           2e-2   (measured: up to 7.5e-3)

accuracy_level 4 rounds each block of activations to int8 before the integer matrix product, as onnxruntime's
MLAS does. The rounding is discontinuous: a last-bit difference upstream (an RMSNorm, a sigmoid) can move an
activation across a rounding boundary, and the logits then move by a whole quantization step times the
weights. Such flips are rare (the median error stays ~4e-6) but not small, hence the looser bound. Where they
happen depends on the CPU: onnxruntime picks its int8 kernels by instruction set (AVX2, AVX-512, VNNI), and
their results differ in the last bits, so their flips fall elsewhere. So on such a model the peer's (and gentwin.fast's) logits can be compared with the
reference's only within the tolerance, and their tokens only by a verdict (identical or a numerical tie).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from gentwin.config import load_config
from gentwin.reference.penalties import FLOAT_LOWEST

FLOAT_RELATIVE_TOLERANCE = 1e-5
INT8_ACTIVATIONS_RELATIVE_TOLERANCE = 2e-2
INT8_ACCURACY_LEVEL = 4
LOWEST = float(FLOAT_LOWEST)  # float32's lowest, which bans a token


@dataclass(frozen=True)
class ModelFacts:
    folder: Path
    vocab_size: int
    context_length: int
    pad_token_id: int
    eos_token_ids: tuple
    special_token_ids: frozenset
    rounds_activations_to_int8: bool
    relative_tolerance: float
    search: dict          # the folder's own search defaults (genai_config.json)

    @classmethod
    def read(cls, folder) -> "ModelFacts":
        config = load_config(str(folder))
        specials = {config.bos_token_id, config.pad_token_id, *config.eos_token_ids}
        int8 = quantizes_activations(config.model_path)
        tolerance = INT8_ACTIVATIONS_RELATIVE_TOLERANCE if int8 else FLOAT_RELATIVE_TOLERANCE
        return cls(Path(folder), config.vocab_size, config.context_length, config.pad_token_id,
                   tuple(config.eos_token_ids), frozenset(specials), int8, tolerance, dict(config.search))

    def allowed_logit_error(self, logits) -> float:
        """The largest difference from logits [..., vocab] that two correct implementations may show."""
        finite = np.abs(np.asarray(logits)[np.isfinite(logits)])
        return self.relative_tolerance * max(1.0, float(finite.max()) if finite.size else 1.0)


def quantizes_activations(model_path: str) -> bool:
    """Whether the graph has a MatMulNBits that rounds its activations to int8 (accuracy_level 4)."""
    graph = onnx.load(model_path, load_external_data=False).graph
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            levels = [attribute.i for attribute in node.attribute if attribute.name == "accuracy_level"]
            if levels and levels[0] == INT8_ACCURACY_LEVEL:
                return True
    return False


def logit_error(ours, theirs) -> float:
    """The largest absolute difference between two arrays of (processed) logits. Entries that are not finite
    (a banned token: float32's lowest times a penalty can be -inf) must match exactly; otherwise inf."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    ours_banned = ~np.isfinite(ours) | (ours <= LOWEST)
    theirs_banned = ~np.isfinite(theirs) | (theirs <= LOWEST)
    if np.any(ours_banned != theirs_banned) or np.any(ours[ours_banned] != theirs[theirs_banned]):
        return float("inf")
    differences = np.abs(ours - theirs)[~ours_banned]
    return float(differences.max()) if differences.size else 0.0
