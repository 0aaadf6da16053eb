"""com.microsoft LinearAttentionGate: the decay and write-rate gates of Qwen3.5's linear attention, as
onnxruntime's CPU kernel computes them, in float32 (half inputs widened, outputs rounded back).

    decay = decay_scale * softplus(a + dt_bias)     (the builder passes decay_scale = -exp(A_log))
    beta  = sigmoid(b)

a and b are [B, T, H]; dt_bias and decay_scale are [H], one per head. b and beta are optional.
"""

import numpy as np

from ..cpp_arithmetic import expf
from .contrib_op import ContribOp


class LinearAttentionGate(ContribOp):
    def _run(self, a, dt_bias, decay_scale, b=None):
        if b is None and self.output_requested(1):
            raise ValueError("LinearAttentionGate: the b input is required when the beta output is requested.")
        decay = (decay_scale * softplus(a + dt_bias)).astype(np.float32)  # [B, T, H]
        return self.outputs(decay, None if b is None else sigmoid(b))


def softplus(x):
    """log(1 + e^x), written to stay finite: x + log(1 + e^-x) for positive x."""
    return np.where(x > 0, x + np.log1p(expf(-np.abs(x)).reshape(x.shape)),
                    np.log1p(expf(-np.abs(x)).reshape(x.shape))).astype(np.float32)


def sigmoid(x):
    """1 / (1 + e^-x), written to stay finite: 1 - 1 / (1 + e^x) for negative x."""
    exponential = expf(-np.abs(x)).reshape(x.shape)                     # e^-|x|
    return np.where(x > 0, 1 / (1 + exponential), 1 - 1 / (1 + exponential)).astype(np.float32)
