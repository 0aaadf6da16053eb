"""Layer normalisation kernels: SimplifiedLayerNormalization (RMSNorm, onnxruntime's default-domain op),
SkipSimplifiedLayerNormalization, SkipLayerNormalization and GatedRMSNorm (com.microsoft)."""

import numpy as np

from .contrib_op import ContribOp
from .linear_attention_gate import sigmoid

# onnxruntime's CPU skip kernels never write the training-only mean and inv_std_var outputs.
STATISTICS_OUTPUTS = {1: "mean", 2: "inv_std_var"}


def rms_norm(x, gamma, epsilon, axes=(-1,)):
    """x / sqrt(mean(x^2) + epsilon) * gamma, and the 1 / sqrt(...) it divided by."""
    root_mean_square = np.sqrt(np.mean(x * x, axis=axes, keepdims=True) + np.float32(epsilon))
    return x / root_mean_square * gamma, 1 / root_mean_square


def layer_norm(x, gamma, beta, epsilon):
    """(x - mean) / sqrt(mean((x - mean)^2) + epsilon) * gamma (+ beta) over the last axis."""
    centred = x - np.mean(x, axis=-1, keepdims=True)
    normalized = centred / np.sqrt(np.mean(centred * centred, axis=-1, keepdims=True) + np.float32(epsilon)) * gamma
    return normalized if beta is None else normalized + beta


class SimplifiedLayerNormalization(ContribOp):
    """RMSNorm over the axes from `axis` on: Y = X / sqrt(mean(X^2) + epsilon) * scale; optional inv_std_var.

    onnxruntime registers it in the default ONNX domain, which is where model builders put it.
    """

    op_domain = ""
    implemented_values = {"stash_type": (1,)}

    def _run(self, x, scale, axis=-1, epsilon=1e-5, stash_type=1):
        axes = tuple(range(axis % x.ndim, x.ndim))
        y, inv_std_var = rms_norm(x, scale, epsilon, axes)
        return self.outputs(y.astype(x.dtype, copy=False), inv_std_var)


class SkipSimplifiedLayerNormalization(ContribOp):
    """sum = input + skip (+ bias); output = RMSNorm(sum) * gamma; the 4th output is sum (the residual)."""

    unimplemented_outputs = STATISTICS_OUTPUTS

    def _run(self, x, skip, gamma, bias=None, epsilon=1e-12):
        total = x + skip if bias is None else x + skip + bias  # skip may be [B, S, H], [1, S, H] or [S, H]
        y, _ = rms_norm(total, gamma, epsilon)
        return self.outputs(y.astype(x.dtype, copy=False), None, None, total)


class SkipLayerNormalization(ContribOp):
    """sum = input + skip (+ bias); output = LayerNorm(sum) * gamma (+ beta); the 4th output is sum."""

    unimplemented_outputs = STATISTICS_OUTPUTS

    def _run(self, x, skip, gamma, beta=None, bias=None, epsilon=1e-12):
        total = x + skip if bias is None else x + skip + bias  # skip may be [B, S, H], [1, S, H] or [S, H]
        return self.outputs(layer_norm(total, gamma, beta, epsilon).astype(x.dtype, copy=False), None, None, total)



GATE_ACTIVATIONS = ("silu", "sigmoid")


class GatedRMSNorm(ContribOp):
    """Y = RMSNorm(X) * scale * activation(gate), the norm over groups of len(scale) channels (one per head:
    Qwen3.5's linear attention normalizes each value head's output, then gates it by its z projection).

    X and gate are [..., H * D], scale is [D]; activation is silu (gate * sigmoid(gate)) or sigmoid.
    """

    def _run(self, x, scale, gate, epsilon=1e-5, activation="silu"):
        if activation not in GATE_ACTIVATIONS:
            raise ValueError(f"GatedRMSNorm: activation must be one of {', '.join(GATE_ACTIVATIONS)}, "
                             f"not {activation!r}.")
        group = scale.shape[-1]
        if x.shape[-1] % group or gate.shape != x.shape:
            raise ValueError(f"GatedRMSNorm: X {list(x.shape)} and gate {list(gate.shape)} must have one shape, its "
                             f"last dimension a multiple of scale's {group}.")
        groups = x.reshape(*x.shape[:-1], -1, group)                    # [..., H, D]
        normalized, _ = rms_norm(groups, scale, epsilon)               # [..., H, D]
        gated = sigmoid(gate) if activation == "sigmoid" else gate * sigmoid(gate)  # [..., H * D]
        return ((normalized.reshape(x.shape) * gated).astype(x.dtype),)
