"""com.microsoft GatherBlockQuantized: Gather from a block-quantized table, dequantizing only what it gathers.

The official builder writes it for the tied embeddings of int4 models: the LM head's MatMulNBits weight,
reshaped to uint8 [vocab, hidden * bits / 8], is gathered by token id. Dequantizing the whole table up
front would cost 8x its size in float32; gathering first costs one row per token.
"""

import numpy as np

from .contrib_op import ContribOp, unsupported
from .matmul_nbits import unpack_bits

OP = "GatherBlockQuantized"
NIBBLE_TYPES = ("int4", "uint4")  # ml_dtypes names, as onnx hands such tensors over: one value per element
SCALE_TYPES = (np.dtype(np.float32), np.dtype(np.float16))


class GatherBlockQuantized(ContribOp):
    """Gather(dequantize(data), indices, axis=gather_axis), with data quantized in blocks of block_size
    consecutive values along quantize_axis, each block with its own scale and zero point:
    value = float32(q - zero_point) * float32(scale), then cast to the scales' dtype (float32 or float16),
    which is the output's dtype.

    data is either
    - uint8 with `bits` (2, 4 or 8) values per byte packed along the last axis, low bits first; then
      gather_axis must be 0, quantize_axis the last axis, zero points are packed the same way and default
      to 2^(bits - 1); or
    - int4 / uint4, one value per element, any two different or equal axes; zero points have the
      data's type and default to 0.

    scales (and zero_points, once unpacked) have data's logical shape with the quantize axis cut into
    ceil(length / block_size) blocks. onnxruntime writes zeros for an index outside [-dim, dim); that is
    a token id the table does not hold, so this kernel raises instead.
    """

    def _run(self, data, indices, scales, zero_points=None, bits=4, block_size=128, gather_axis=0, quantize_axis=1):
        axes = check_layout(data, scales, zero_points, bits, block_size, gather_axis, quantize_axis)
        gather_axis, quantize_axis = axes
        indices = wrapped_indices(indices, data.shape[gather_axis])
        quantized = gathered_values(data, indices, gather_axis, bits)  # the output's shape
        # the output's quantize axis, once the indices' axes replace the gather axis
        value_axis = quantize_axis if quantize_axis <= gather_axis else quantize_axis + indices.ndim - 1
        same_axis = gather_axis == quantize_axis
        block_indices = indices // block_size if same_axis else indices  # the blocks along the gather axis
        scale = np.take(scales, block_indices, axis=gather_axis)  # the output's shape, blocks along value_axis
        zero_point = gathered_zero_points(zero_points, block_indices, gather_axis, bits, data.dtype, scale.shape)
        if not same_axis:
            length = quantized.shape[value_axis]
            scale = per_value(scale, value_axis, block_size, length)  # the output's shape
            zero_point = per_value(zero_point, value_axis, block_size, length)  # the output's shape
        centred = (quantized - zero_point).astype(np.float32)  # exact: |q - zero_point| < 256
        return ((centred * scale.astype(np.float32)).astype(scales.dtype),)


def check_layout(data, scales, zero_points, bits, block_size, gather_axis, quantize_axis):
    """Raise unless the inputs are laid out as onnxruntime's CPU kernel requires -> the axes, made non-negative."""
    rank = data.ndim
    if data.dtype != np.uint8 and data.dtype.name not in NIBBLE_TYPES:
        raise unsupported(OP, "data dtype", str(data.dtype))
    if scales.dtype not in SCALE_TYPES:
        raise unsupported(OP, "scales dtype", str(scales.dtype))
    if bits not in ((2, 4, 8) if data.dtype == np.uint8 else (4,)):
        raise ValueError(f"{OP}: bits={bits} is invalid for {data.dtype} data.")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"{OP}: block_size={block_size} must be a power of 2 and at least 16.")
    for name, axis in (("gather_axis", gather_axis), ("quantize_axis", quantize_axis)):
        if not -rank <= axis < rank:
            raise ValueError(f"{OP}: {name}={axis} is out of range for data of rank {rank}.")
    gather_axis, quantize_axis = gather_axis % rank, quantize_axis % rank
    if data.dtype == np.uint8 and (gather_axis != 0 or quantize_axis != rank - 1):
        raise ValueError(
            f"{OP}: uint8 data needs gather_axis 0 and quantize_axis the last axis (and rank >= 2); "
            f"got gather_axis={gather_axis}, quantize_axis={quantize_axis} for rank {rank}."
        )
    logical_shape = list(data.shape)
    logical_shape[quantize_axis] *= 8 // bits if data.dtype == np.uint8 else 1
    scales_shape = list(logical_shape)
    scales_shape[quantize_axis] = -(-logical_shape[quantize_axis] // block_size)
    if list(scales.shape) != scales_shape:
        raise ValueError(f"{OP}: scales of shape {scales.shape} do not fit data {data.shape}; expected {scales_shape}.")
    if zero_points is not None:
        if zero_points.dtype != data.dtype:
            raise ValueError(f"{OP}: zero_points dtype {zero_points.dtype} differs from data dtype {data.dtype}.")
        packed_shape = list(scales_shape)
        if data.dtype == np.uint8:
            packed_shape[-1] = -(-scales_shape[-1] // (8 // bits))
        if list(zero_points.shape) != packed_shape:
            raise ValueError(f"{OP}: zero_points of shape {zero_points.shape} do not fit; expected {packed_shape}.")
    return gather_axis, quantize_axis


def wrapped_indices(indices, dim):
    """indices as int64 in [0, dim), counting negative ones from the end; an index outside [-dim, dim) raises."""
    if not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"{OP}: indices must be integers, got {indices.dtype}.")
    indices = indices.astype(np.int64)
    outside = (indices < -dim) | (indices >= dim)
    if outside.any():
        raise IndexError(f"{OP}: index {indices[outside].flat[0]} is outside [-{dim}, {dim}).")
    return np.where(indices < 0, indices + dim, indices)


def gathered_values(data, indices, gather_axis, bits):
    """The quantized values the indices pick along gather_axis, unpacked, as int32."""
    gathered = np.take(data, indices, axis=gather_axis)  # data's shape, indices' axes for the gather axis
    if data.dtype == np.uint8:
        gathered = unpack_bits(gathered, bits, data.shape[-1] * (8 // bits))  # [*indices.shape, ..., values]
    return gathered.astype(np.int32)


def gathered_zero_points(zero_points, block_indices, gather_axis, bits, data_dtype, blocks_shape):
    """The zero points of the gathered blocks as int32 [blocks_shape], or the default where there are none:
    2^(bits - 1), the middle of the range, for uint8 data, and 0 for int4 / uint4 data."""
    if zero_points is None:
        return np.full(blocks_shape, 1 << (bits - 1) if data_dtype == np.uint8 else 0, np.int32)
    gathered = np.take(zero_points, block_indices, axis=gather_axis)  # still packed for uint8
    if gathered.dtype == np.uint8:
        gathered = unpack_bits(gathered, bits, blocks_shape[-1])  # blocks_shape
    return gathered.astype(np.int32)


def per_value(blocks, axis, block_size, length):
    """Each block's entry repeated for the block_size values it covers along `axis`, cut to `length`."""
    return np.repeat(blocks, block_size, axis=axis).take(np.arange(length), axis=axis)
