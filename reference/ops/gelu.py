"""com.microsoft FastGelu and QuickGelu activations."""

import numpy as np

from .contrib_op import ContribOp

SQRT_2_OVER_PI = np.float32(0.7978845608028654)
CUBIC_COEFFICIENT = np.float32(0.044715 * 0.7978845608028654)


class FastGelu(ContribOp):
    """Y = 0.5 * X * (1 + tanh(sqrt(2/pi) * (X + 0.044715 * X^3))) with X = x (+ bias): the tanh
    approximation of GELU that GPT-2 uses."""

    def _run(self, x, bias=None):
        if bias is not None:
            x = x + bias
        inner = x * (SQRT_2_OVER_PI + CUBIC_COEFFICIENT * x * x)
        return ((np.float32(0.5) * x * (1 + np.tanh(inner))).astype(x.dtype, copy=False),)


class QuickGelu(ContribOp):
    """Y = X * sigmoid(alpha * X), the sigmoid approximation of GELU (alpha = 1.702)."""

    def _run(self, x, alpha=1.702):
        return ((x / (1 + np.exp(-np.float32(alpha) * x))).astype(x.dtype, copy=False),)
