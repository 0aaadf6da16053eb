"""What the harness needs to know about a model folder, read from the folder itself (any implementation's Model
will do): the special token ids, the vocabulary, and how closely two correct implementations' logits agree.

The bound on two correct implementations' logits, per row of logits, has two parts.

Float rounding, relative to the row's largest logit (at least 1, because fixtures with random weights have
logits up to ~20 and tiny exported models below 1): FLOAT_RELATIVE_TOLERANCE, 1e-5 (measured: below 2.5e-6
between onnxruntime-genai and gentwin.reference on every float model, fp32 or int4 without int8 activations).

Int8 activations. A MatMulNBits (or MoE) with accuracy_level 4 rounds each block of its input to int8 before
the integer product, as onnxruntime's MLAS does: the block's values become multiples of step = max|a| / 127, each
off by at most step / 2. Two implementations round values that differ in their last bits, so now and then one
value lands on the other side of a rounding boundary and the two roundings differ by a whole step. One flip is
small; its effect downstream is not, because it perturbs every later activation by far more than a last bit, and
those perturbations flip more roundings in the next layers. Over many layers the two implementations' rounding
errors decorrelate: on a 30-layer model the logits differ by up to 10% of their range (SmolLM2-135M int4: 0.66 to
1.10 absolute) although every MatMulNBits agrees to 8e-7 on equal inputs. A worst-case bound propagated from
step / 2 per value through 30 layers would be astronomically loose, so the bound is measured instead, on the same
token history, from the oracle itself:

    D = max over the row |logits - unrounded logits|

where the unrounded logits are the oracle's on the model's rounding twin (twins.py): the same folder with
accuracy_level 4 set to 0 (the same weights, dequantized, multiplied in float). D is everything the int8
rounding of every activation does to these logits, each value off by up to step / 2, carried through the layers
exactly, nonlinearities included. A correct implementation's own rounding is another pattern of the same
errors, as far from the unrounded logits as the oracle's, so by the triangle inequality the two lie within
2 D of each other, on top of float rounding.

D is a property of the model, not of one row. In a row where the oracle's roundings happen to cancel out, its
logits lie close to the unrounded ones, yet another correct rounding pattern can land as far from them as in
any other row: measured per row, the bound is too tight exactly there (on SmolLM2-135M int4 the peer's logits
came within 1.004 of a per-row bound; on 2-layer hybrids up to 1.23 of it). So D is taken relative to each
row's largest logit (rows of larger logits carry larger activations, whose int8 steps are larger) and the
largest over everything measured of the model: the calibration prompts and every row of the history compared.
The bound per row is then

    bound = (FLOAT_RELATIVE_TOLERANCE + 2 * rounding) * max(1, max |logits|)
    rounding = the largest over the rows measured of D / max(1, max |logits|)

It grows with everything that makes rounding matter (more layers, coarser blocks, larger activations) and is
the float part alone where nothing rounds. Where two roundings are fully decorrelated their difference is
sqrt(2) D in distribution, so 2 D leaves room for an implementation whose rounding pattern moves the logits
further than the oracle's does; where few roundings flip (shallow models) the difference is a small fraction of
D. Measured on 40-token prompts of tiny-width llama-layout int4 models (accuracy_level 4), onnxruntime-genai's
logits against gentwin.reference's: 2 layers, D 0.6 to 0.9, difference 9e-6; 8 layers, D 1.7 to 3.1,
difference up to 0.19 D; 30 layers, D 3.5 to 11, difference up to 0.77 D.

The verdict (verdict.py) measures the rounding on the calibration prompts (calibrated_rounding, once per
model: the greedy battery's prompts, every position) and on the very history it compares, teacher-forced
(model_rounding). A caller that has no unrounded logits at hand gets allowed_logit_error, from the calibration
alone.

QMoE experts of 8 bits round their input to int8 at every accuracy_level (MLAS has no float kernel for them):
that rounding stays in the twin, so its share is not in D.

Half precision is rounding of the same kind: an fp16 or bf16 graph rounds every activation to 11 or 8 bits of
mantissa, and two correct implementations round differently (onnxruntime's kernels accumulate in float32 in
some ops and not in others, numpy in its own order). So the twin of a half-precision graph is also computed in
float32 (its weights, casts, constants, inputs and outputs widened), and D is what half precision does to the
model's logits, by the same argument: fp16 builds of tiny models part by up to about 1% of their largest logit,
a hundred times float32's part, and a fixed tolerance would be either loose for a shallow model or tight for a
deep one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from gentwin.config import load_config
from gentwin.conformance.twins import computes_in_half_precision, rounding_twin, rounds_activations_to_int8
from gentwin.reference.penalties import FLOAT_LOWEST

FLOAT_RELATIVE_TOLERANCE = 1e-5
ROUNDINGS_APART = 2           # the oracle's rounding and the implementation's, each D from the unrounded logits
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
    half_precision: bool  # the graph computes in float16 or bfloat16
    search: dict          # the folder's own search defaults (genai_config.json)

    @classmethod
    def read(cls, folder) -> "ModelFacts":
        config = load_config(str(folder))
        specials = {config.bos_token_id, config.pad_token_id, *config.eos_token_ids}
        graph = onnx.load(config.model_path, load_external_data=False).graph
        return cls(Path(folder), config.vocab_size, config.context_length, config.pad_token_id,
                   tuple(config.eos_token_ids), frozenset(specials), rounds_activations_to_int8(graph),
                   computes_in_half_precision(graph), dict(config.search))

    @property
    def rounds_beyond_float32(self) -> bool:
        """Whether two correct implementations may part by more than float32 rounding: int8 activations or
        half precision, whose share of the bound is measured on the rounding twin."""
        return self.rounds_activations_to_int8 or self.half_precision

    @property
    def rounding_kind(self) -> str:
        kinds = ["int8 rounding"] * self.rounds_activations_to_int8 + ["half precision"] * self.half_precision
        return " and ".join(kinds) or "no rounding beyond float32"

    def float_bound(self, logits) -> np.ndarray:
        """The float-rounding part of the bound for logits [..., vocab]: one value per row [...]."""
        return self.logit_bound(logits, 0.0)

    def logit_bound(self, logits, rounding: float) -> np.ndarray:
        """The largest difference from the oracle's logits [..., vocab] that a correct implementation's may
        show, per row [...]: float rounding, plus twice the model's int8 ROUNDING (model_rounding: D relative
        to a row's largest logit)."""
        return (FLOAT_RELATIVE_TOLERANCE + ROUNDINGS_APART * rounding) * row_scale(logits)

    def model_rounding(self, pairs=()) -> float:
        """How far the int8 rounding moves this model's logits, relative to a row's largest logit: the largest
        over the calibration prompts and PAIRS of (the oracle's logits, the rounding twin's) on one history
        [..., vocab] each. 0 where nothing rounds."""
        if not self.rounds_beyond_float32:
            return 0.0
        measured = [float(np.max(logit_errors(logits, unrounded) / row_scale(logits)))
                    for logits, unrounded in pairs if np.size(logits)]
        return max([self.calibrated_rounding, *measured])

    def allowed_logit_error(self, logits) -> float:
        """The bound for logits [..., vocab] without unrounded logits at hand: the calibration's rounding."""
        return float(np.max(self.logit_bound(logits, self.calibrated_rounding)))

    @property
    def calibrated_rounding(self) -> float:
        """D relative to each row's largest logit, the largest over every position of the greedy battery's
        prompts (each row alone, without its padding), measured with gentwin.reference on the folder and its
        rounding twin (0 where nothing rounds); measured once per folder in a process, as gentwin check reads
        a folder's facts for each family."""
        if not self.rounds_beyond_float32:
            return 0.0
        return _calibrated_rounding(str(self.folder.resolve()), self.vocab_size, self.pad_token_id)


@functools.lru_cache(maxsize=None)
def _calibrated_rounding(folder: str, vocab_size: int, pad_token_id: int) -> float:
    import gentwin.reference as oracle  # only here: loading models is what the rest of this module avoids
    from gentwin.conformance.scenarios import greedy_battery

    rounded, unrounded = oracle.Model(folder), oracle.Model(str(rounding_twin(folder)))
    largest = 0.0
    for scenario in greedy_battery(min(vocab_size, 1000), pad_token_id):
        for row in scenario.prompt:  # one at a time, without its padding: every cache kind takes that
            prompt = [[token for token in row if token != pad_token_id]]
            # at the battery's max_length, which a windowed KV cache's window fits in
            logits, twin = (prompt_logits(oracle, model, prompt, scenario.options["max_length"])
                            for model in (rounded, unrounded))                                  # [1, S, V]
            largest = max(largest, float(np.max(logit_errors(logits, twin) / row_scale(logits))))
    return largest


def prompt_logits(og, model, prompt, max_length: int | None = None) -> np.ndarray:
    """Every position's logits [rows, positions, vocab] after appending PROMPT (rows of token ids), with the
    search option MAX_LENGTH (default: one more than the prompt)."""
    params = og.GeneratorParams(model)
    params.set_search_options(batch_size=len(prompt), max_length=max_length or len(prompt[0]) + 1)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array(prompt, dtype=np.int32))
    return np.array(generator.get_output("logits"), np.float32)


def row_scale(logits) -> np.ndarray:
    """Each row's largest finite |logit|, at least 1: [...] for logits [..., vocab]."""
    magnitudes = np.abs(np.asarray(logits, np.float64))
    magnitudes[~np.isfinite(magnitudes) | (magnitudes >= -LOWEST)] = 0.0
    return np.maximum(1.0, magnitudes.max(axis=-1))


def logit_errors(ours, theirs) -> np.ndarray:
    """The largest absolute difference in each row of two arrays of (processed) logits [..., vocab]: [...].
    Entries that are not finite (a banned token: float32's lowest times a penalty can be -inf) must match
    exactly; otherwise the row's error is inf."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    ours_banned = ~np.isfinite(ours) | (ours <= LOWEST)
    theirs_banned = ~np.isfinite(theirs) | (theirs <= LOWEST)
    mismatched = (ours_banned != theirs_banned) | (ours_banned & (ours != theirs))
    differences = np.where(ours_banned, 0.0, np.abs(ours - theirs))
    return np.where(mismatched.any(axis=-1), np.inf, differences.max(axis=-1))


def logit_error(ours, theirs) -> float:
    """The largest absolute difference between two arrays of logits (see logit_errors)."""
    errors = logit_errors(ours, theirs)
    return float(errors.max()) if errors.size else 0.0
