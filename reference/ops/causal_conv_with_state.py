"""com.microsoft CausalConvWithState: a depthwise causal 1-D convolution that carries its last inputs
from one run to the next (LFM2's short convolution, the convolution in front of Qwen3.5's linear
attention), as onnxruntime's CPU kernel computes it.

Shapes: B batch, C channels, L new positions, K kernel taps, P = (K - 1) * dilation state positions.

The state is the tail of the input stream: after a run, present_state holds the last P positions of
past_state followed by this run's input, so a prompt of L tokens and the same tokens fed one at a time
leave the same state. An omitted past_state is all zeros, i.e. the sequence starts here.
"""

import numpy as np

from ..cpp_arithmetic import expf
from .contrib_op import ContribOp

ACTIVATIONS = ("none", "silu", "swish")  # swish is another name for silu


class CausalConvWithState(ContribOp):
    """output[b, c, t] = activation(bias[c] + sum_k weight[c, 0, k] * stream[b, c, t + k * dilation]),
    stream being past_state followed by input along the positions ([B, C, P + L]); present_state is
    the last P positions of that stream.

    channels_last=1 lays input and output out as [B, L, d_1, ..., d_n] and the states as
    [B, P, d_1, ..., d_n] (C = d_1 * ... * d_n); weight and bias keep their shapes. onnxruntime's
    CPU kernel implements ndim=1 and state_window=0 only (the windowed state on CUDA only), and so does
    this one.
    """

    implemented_values = {"ndim": (1,), "state_window": (0,)}

    def _run(self, x, weight, bias=None, past_state=None, ndim=1, activation="none", dilation=1,
             channels_last=0, state_window=0):  # fmt: skip
        check_attributes(activation, dilation, channels_last)
        new = channels_first(x) if channels_last else x  # [B, C, L]
        batch, channels, length = new.shape
        taps = check_weight(weight, bias, channels)
        state_length = (taps - 1) * dilation
        if past_state is None:
            past = np.zeros((batch, channels, state_length), new.dtype)  # [B, C, P]
        else:
            check_past_state(past_state, state_shape(x, state_length, channels_last))
            past = channels_first(past_state) if channels_last else past_state  # [B, C, P]

        stream = np.concatenate([past, new], axis=-1)  # [B, C, P + L]
        output = depthwise_causal_conv(stream, weight[:, 0], bias, dilation, length)  # [B, C, L]
        if activation != "none":
            output = silu(output)
        present = stream[..., stream.shape[-1] - state_length :]  # [B, C, P]
        if channels_last:
            channel_axes = x.shape[2:]
            return self.outputs(channels_last_layout(output, channel_axes), channels_last_layout(present, channel_axes))
        return self.outputs(output, np.ascontiguousarray(present))


def depthwise_causal_conv(stream, kernels, bias, dilation, length):
    """Each channel convolved with its own K taps ([C, K]); output t reads stream positions t + k * dilation.

    The sum starts from the bias and adds the taps in order, in float32, as onnxruntime's loop does.
    """
    batch, channels, _ = stream.shape
    total = np.zeros((batch, channels, length), stream.dtype)  # [B, C, L]
    if bias is not None:
        total += bias[:, None]
    for tap in range(kernels.shape[1]):
        start = tap * dilation
        total += kernels[:, tap, None] * stream[..., start : start + length]  # [B, C, L]
    return total


def silu(x):
    """x * sigmoid(x), written as onnxruntime's loop writes it: x / (1 + expf(-x)), with the C library's expf."""
    return (x / (1 + expf(-x).reshape(x.shape))).astype(x.dtype, copy=False)


def channels_first(x):
    """[B, L, d_1, ..., d_n] -> [B, C, L] with C = d_1 * ... * d_n."""
    return x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1)  # [B, C, L]


def channels_last_layout(x, channel_axes):
    """[B, C, L] -> [B, L, d_1, ..., d_n] with channel_axes = (d_1, ..., d_n)."""
    batch, _, positions = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(batch, positions, *channel_axes)  # [B, L, d...]


def state_shape(x, state_length, channels_last):
    """The shape past_state must have for input x: [B, C, P], or [B, P, d_1, ..., d_n] when channels_last."""
    if channels_last:
        return (x.shape[0], state_length, *x.shape[2:])
    return (x.shape[0], x.shape[1], state_length)


def check_attributes(activation, dilation, channels_last):
    op = "CausalConvWithState"
    if activation not in ACTIVATIONS:
        raise ValueError(f"{op}: activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}.")
    if dilation < 1:
        raise ValueError(f"{op}: dilation must be at least 1, not {dilation}.")
    if channels_last not in (0, 1):
        raise ValueError(f"{op}: channels_last must be 0 or 1, not {channels_last}.")


def check_weight(weight, bias, channels):
    """The depthwise kernel [C, 1, K] and bias [C] for `channels` input channels -> K."""
    op = "CausalConvWithState"
    if weight.ndim != 3 or weight.shape[0] != channels or weight.shape[1] != 1 or weight.shape[2] < 1:
        raise ValueError(f"{op}: weight must be [channels={channels}, 1, kernel_size], not {list(weight.shape)}.")
    if bias is not None and bias.shape != (channels,):
        raise ValueError(f"{op}: bias must be [channels={channels}], not {list(bias.shape)}.")
    return weight.shape[2]


def check_past_state(past_state, expected):
    if past_state.shape != expected:
        raise ValueError(
            f"CausalConvWithState: past_state must be {list(expected)} (batch, and (kernel_size - 1) * dilation "
            f"positions of every channel), not {list(past_state.shape)}."
        )
