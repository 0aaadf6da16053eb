"""How far the oracle was from choosing another token: the margin reported beside a numerical tie.

Two correct implementations compute logits that differ in the last bits; with int4 models whose MatMulNBits
round activations to int8, a last-bit difference upstream can move a value across a rounding boundary and
the logits then differ more. Where the tokens of two implementations first differ, the report says how close
the oracle was to the other implementation's token, in logit units, beside the measured logit error.

The margin is the smallest shift d such that the oracle's own choice (gentwin.reference.sampling: greedy,
top-k, top-p, the draw from std::mt19937), run on its processed logits with every logit moved by at most d,
picks the other token, the random draw held fixed at the one the oracle made. Three pushes are tried:

    lift   raise the token and every logit above it, lower the rest: the token's interval of cumulative
           probability reaches further (for greedy search: d is half the gap to the logit above)
    drop   raise the token and every logit below it, lower the rest: the tokens sorted before it weigh less
           (for a token below greedy search's choice: d is half the gap between the two)
    sink   lower the token and raise every other logit less than 2d below it, lower the rest: those tokens
           are sorted before it now, and their probability moves its interval by a whole token's worth

For sampling, d is then the draw's distance from the nearest cumulative-probability boundary, in logit units,
or the distance at which near-equal logits swap places; pushes also move the edge of the kept set (top-k's
k-th logit, the nucleus's cut) when that is what stands in the way. d is found by a scan and a bisection,
each probe one call of the oracle's choice, so the sampler is never written twice.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

F32 = np.float32
PUSHES = ("lift", "drop", "sink")
SCAN_START, SCAN_RATIO = 1e-9, 1.25   # the first shift tried, relative to the limit, and the scan's step
BISECTION_STEPS = 30


def pushed(scores: np.ndarray, token: int, shift: float, push: str) -> np.ndarray:
    """scores [vocab] with TOKEN pushed by SHIFT in the way PUSH names (see the module docstring)."""
    if push == "lift":
        raised = scores > scores[token]                                                 # [vocab]
    elif push == "drop":
        raised = scores < scores[token]
    else:
        raised = scores > scores[token] - F32(2 * shift)
    raised[token] = push != "sink"
    with np.errstate(over="ignore"):
        return np.where(raised, scores + F32(shift), scores - F32(shift)).astype(F32)  # [vocab]


def margin(choose: Callable[[np.ndarray], int], scores: np.ndarray, token: int) -> float:
    """The smallest shift of scores [vocab] (processed logits) at which choose picks TOKEN, or inf when no
    shift up to the scores' own spread does. choose must be deterministic (its random draw fixed)."""
    scores = np.asarray(scores, F32)
    if choose(scores) == token:
        return 0.0
    finite = scores[np.isfinite(scores) & (scores > np.finfo(F32).min)]
    limit = float(finite.max() - finite.min()) + 1.0 if finite.size else 1.0
    return min(_smallest_shift(lambda shift: choose(pushed(scores, token, shift, push)) == token, limit)
               for push in PUSHES)


def _smallest_shift(picks: Callable[[float], bool], limit: float) -> float:
    """The smallest shift in (0, limit] where picks(shift) holds, or inf. picks is not monotone (once a token
    overtakes others, the sorted order changes and the choice can move back), so the shift is scanned upwards
    from below float32's resolution, then bisected between the first shift that picks and the one before."""
    low = high = limit * SCAN_START
    while not picks(high):
        if high >= limit:
            return float("inf")
        low, high = high, min(high * SCAN_RATIO, limit)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        low, high = (low, middle) if picks(middle) else (middle, high)
    return high


class FixedDraw:
    """A stand-in for the oracle's std::mt19937 that yields the same 32-bit words on every probe, so each
    probe of `margin` meets the draw the oracle met."""

    def __init__(self, words: list[int]):
        self._words = iter(words)

    def next_u32(self) -> int:
        return next(self._words)
