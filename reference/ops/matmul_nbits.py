"""com.microsoft MatMulNBits: Y = A @ dequantize(B) + bias with B quantized block-wise along K to n bits."""

import numpy as np

from .contrib_op import ContribOp

FLOAT_ACCURACY_LEVELS = (0, 1)  # 0 = unset, 1 = fp32: dequantize B and multiply in float32
INT8_ACCURACY_LEVEL = 4  # A is quantized to int8 per block as well, products accumulate as integers
INT8_MAX = np.float32(127)


class MatMulNBits(ContribOp):
    """B is [N, k_blocks, block_size * bits / 8] uint8: block_size weights per block, packed along K
    from the low bits of each byte up. Weight k of output n dequantizes to
    (B[n, k] - zero_point[n, block]) * scales[n, block]; zero points are n-bit packed uint8 like B, or
    floats, and default to 2^(bits - 1).

    accuracy_level 4 with uint8 (or default) zero points mirrors onnxruntime's MLAS "CompInt8"
    kernels: each row of A is cut into blocks of block_size along K and quantized symmetrically to
    int8 (scale = max|a| / 127, value = round-half-to-even(a * (127 / max|a|))). MLAS then sums exact
    integer block dot products scaled by scale_a * scale_b; here the int8 A is scaled back and multiplied
    with the dequantized B in one float32 matmul. The products are the same; only the float rounding of
    the sums differs (relative error ~1e-6). onnxruntime takes that path only when B is a constant
    initializer it can prepack (always so in exported models; a B fed as a graph input is multiplied in
    float32).

    Weights are initializers, so the unpacked weights are cached per kernel instance, keyed on the
    identity of the B, scales and zero_points arrays.
    """

    implemented_values = {
        "bits": (2, 4, 8),
        "accuracy_level": (*FLOAT_ACCURACY_LEVELS, INT8_ACCURACY_LEVEL),
        "weight_prepacked": (0,),
    }
    unimplemented_inputs = {4: "g_idx"}

    def __init__(self, onnx_node, run_params):
        super().__init__(onnx_node, run_params)
        self._unpacked = None  # ((B, scales, zero_points) it was built from, unpacked weights)

    def _run(
        self,
        a,
        b,
        scales,
        zero_points=None,
        g_idx=None,
        bias=None,
        K=None,
        N=None,
        bits=4,
        block_size=None,
        accuracy_level=0,
        weight_prepacked=0,
    ):
        rows = a.reshape(-1, K)  # [M, K]
        # MLAS has no int8 kernel for float zero points, so onnxruntime multiplies those in float32
        float_zero_points = zero_points is not None and zero_points.dtype != np.uint8
        int8_path = accuracy_level == INT8_ACCURACY_LEVEL and not float_zero_points
        weights = self._cached_weights((b, scales, zero_points), K, N, bits, block_size)  # [K, N]
        if int8_path:
            rows = int8_rounded(rows, block_size)  # [M, K]
        y = rows @ weights  # [M, N]
        if bias is not None:
            y = y + bias
        return (y.reshape(*a.shape[:-1], N).astype(a.dtype),)  # [..., N]

    def _cached_weights(self, sources, K, N, bits, block_size):
        """The dequantized weights for `sources` = (B, scales, zero_points), reused while they are the same arrays."""
        if self._unpacked is None or any(x is not y for x, y in zip(self._unpacked[0], sources)):
            centred, scales = unpack_weights(*sources, N, bits, block_size)  # [N, k_blocks, block_size], [N, k_blocks]
            weights = np.ascontiguousarray((centred * scales[..., None]).reshape(N, -1)[:, :K].T)  # [K, N]
            self._unpacked = sources, weights
        return self._unpacked[1]


def unpack_bits(packed, bits, count):
    """The first `count` n-bit values along the last axis of uint8 `packed`, low bits first."""
    shifts = np.arange(0, 8, bits, dtype=np.uint8)  # [8 / bits]
    values = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)  # [..., bytes, 8 / bits]
    return values.reshape(*packed.shape[:-1], -1)[..., :count]  # [..., count]


def unpack_weights(b, scales, zero_points, N, bits, block_size):
    """(B - zero_point) as float32 [N, k_blocks, block_size] and the scales as [N, k_blocks]."""
    block_count = b.shape[1]
    quantized = unpack_bits(b, bits, block_size).astype(np.float32)  # [N, k_blocks, block_size]
    if zero_points is None:
        zero_points = np.full((N, block_count), 2 ** (bits - 1), np.float32)
    elif zero_points.dtype == np.uint8:
        zero_points = unpack_bits(zero_points.reshape(N, -1), bits, block_count).astype(np.float32)  # [N, k_blocks]
    else:
        zero_points = zero_points.reshape(N, block_count).astype(np.float32)  # [N, k_blocks]
    return quantized - zero_points[..., None], scales.reshape(N, block_count)


def int8_rounded(rows, block_size):
    """A as MLAS sees it: each block of block_size values along K rounded symmetrically to int8, then
    scaled back to float32. The tail block is zero padded."""
    m, k = rows.shape
    block_count = -(-k // block_size)
    padded = np.zeros((m, block_count * block_size), np.float32)
    padded[:, :k] = rows
    blocks = padded.reshape(m, block_count, block_size)  # [M, k_blocks, block_size]
    max_abs = np.abs(blocks).max(axis=-1, keepdims=True)  # [M, k_blocks, 1]
    nonzero = max_abs != 0
    # 127 / max|a| in one division, not 1 / scale: the two can differ by an ulp and flip a rounding
    inverse_scale = np.divide(INT8_MAX, max_abs, out=np.zeros_like(max_abs), where=nonzero)
    values = np.rint(blocks * inverse_scale)  # round half to even, like _MM_ROUND_NEAREST
    return (values * (max_abs / INT8_MAX)).reshape(m, -1)[:, :k]  # [M, K]
