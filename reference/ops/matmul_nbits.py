"""com.microsoft MatMulNBits: Y = A @ dequantize(B) + bias with B quantized block-wise along K to n bits."""

import numpy as np

from .contrib_op import ContribOp

FLOAT_ACCURACY_LEVELS = (0, 1)  # 0 = unset, 1 = fp32: dequantize B and multiply in float32
INT8_ACCURACY_LEVEL = 4  # A is quantized to int8 per block as well, products accumulate as integers
INT8_MAX = np.float32(127)
# A product of at most this many rows of A (a decode step, a few beams) is summed block by block from B's
# quantized values; more rows (a prompt) dequantize B and multiply once. Measured on a 576 x 1536 matrix:
# block sums take 0.3 ms for one row, dequantizing 1.0 ms; at 16 rows block sums are the slower.
BLOCK_SUM_ROWS = 8
# The float32 bytes of one slice of output columns of B (at least one column), unpacked and multiplied at a time
SLICE_BYTES = 8 * 2**20


class MatMulNBits(ContribOp):
    """B is [N, k_blocks, block_size * bits / 8] uint8: block_size weights per block, packed along K
    from the low bits of each byte up. Weight k of output n dequantizes to
    (B[n, k] - zero_point[n, block]) * scales[n, block]; zero points are n-bit packed uint8 like B, or
    floats, and default to 2^(bits - 1).

    accuracy_level 4 with uint8 (or default) zero points mirrors onnxruntime's MLAS "CompInt8"
    kernels: each row of A is cut into blocks of block_size along K and quantized symmetrically to
    int8 (scale = max|a| / 127, value = round-half-to-even(a * (127 / max|a|))). MLAS then sums exact
    integer block dot products scaled by scale_a * scale_b; here the int8 A is scaled back to float32 and
    multiplied with B's values in float32. The products are the same; only the float rounding of the sums
    differs (relative error ~1e-6). onnxruntime takes that path only when B is a constant initializer it
    can prepack (always so in exported models; a B fed as a graph input is multiplied in float32).

    Memory. B stays packed: never more than a slice of it (SLICE_BYTES of float32) is widened at a time, so
    the kernel's memory stays near the size of the packed weights (8 times less than float32 for 4 bits).
    Like onnxruntime, the kernel prepacks B once, on its first call, into the layout it reads fastest: the
    same bytes with the output columns last, [k_blocks, block bytes, N] (`columns_last`), kept while the
    same B array comes back. A slice of columns is then multiplied in one of two ways that compute the same
    sum:
    - few rows (token generation, BLOCK_SUM_ROWS): per block, the dot products of A's values with B's
      quantized values, then each block's zero point and scale applied to those sums (block_sum_product):
      B is never dequantized, only its n-bit values widened to float32;
    - many rows (a prompt): dequantized to float32 [K, columns], then multiplied with all rows at once
      (dequantized_product), the widening and scaling paid once for many rows.
    The two differ by float rounding only (relative ~1e-6).
    """

    implemented_values = {
        "bits": (2, 4, 8),
        "accuracy_level": (*FLOAT_ACCURACY_LEVELS, INT8_ACCURACY_LEVEL),
        "weight_prepacked": (0,),
    }
    unimplemented_inputs = {4: "g_idx"}

    def __init__(self, onnx_node, run_params):
        super().__init__(onnx_node, run_params)
        self._prepacked = None  # (the B array, its bytes with the columns last)

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
        if int8_path:
            rows = int8_rounded(rows, block_size)  # [M, K]
        packed = self._columns_last(b)  # [k_blocks, block bytes, N]
        block_count = b.shape[1]
        block_scales = scales.reshape(N, block_count).T  # [k_blocks, N]
        block_zeros = block_zero_points(zero_points, N, bits, block_count).T  # [k_blocks, N]
        product = block_sum_product if len(rows) <= BLOCK_SUM_ROWS else dequantized_product
        y = np.concatenate(
            [product(rows, packed[..., part], block_scales[:, part], block_zeros[:, part], bits, block_size)
             for part in column_slices(N, K)],
            axis=1,
        )  # [M, N]
        if bias is not None:
            y = y + bias
        return (y.reshape(*a.shape[:-1], N).astype(a.dtype, copy=False),)  # [..., N]

    def _columns_last(self, b):
        """B [N, k_blocks, block bytes] as [k_blocks, block bytes, N]: made on the first call, then kept while
        the same array comes back (B is an initializer)."""
        if self._prepacked is None or self._prepacked[0] is not b:
            self._prepacked = b, np.ascontiguousarray(b.transpose(1, 2, 0))
        return self._prepacked[1]


def column_slices(N, K):
    """The N output columns in slices of at most SLICE_BYTES of float32 weights [K, columns], one column at least."""
    columns = max(1, SLICE_BYTES // (4 * K))
    return [slice(start, min(start + columns, N)) for start in range(0, N, columns)]


def block_sum_product(rows, packed, scales, zero_points, bits, block_size):
    """rows [M, K] times the columns packed [k_blocks, block bytes, n] holds, summed block by block -> [M, n]:

        y[m, n] = sum over blocks c of scale[c, n] * (sum_j a[m, c, j] q[c, j, n] - zero_point[c, n] sum_j a[m, c, j])

    which is sum_k a[m, k] * (q[k, n] - zero_point) * scale with each block's scale and zero point taken out of
    its sum, so that only the quantized values q are widened to float32."""
    a_blocks = blocks_of(rows, len(packed), block_size).transpose(1, 0, 2)  # [k_blocks, M, block_size]
    values_per_byte = 8 // bits
    sums = 0
    # the values at one bit position of every byte are the weights j = position, position + values_per_byte, ...
    # of each block: widened to float32 in one pass and multiplied with those columns of the A blocks
    for position, quantized in enumerate(bit_positions(packed, bits)):  # each [k_blocks, block bytes, n]
        sums = sums + a_blocks[:, :, position::values_per_byte] @ quantized.astype(np.float32)  # [k_blocks, M, n]
    centred = sums - zero_points[:, None, :] * a_blocks.sum(axis=2)[:, :, None]  # [k_blocks, M, n]
    return np.einsum("cmn,cn->mn", centred, scales)  # [M, n]


def dequantized_product(rows, packed, scales, zero_points, bits, block_size):
    """rows [M, K] @ dequantize(B) for the columns that packed [k_blocks, block bytes, n] holds -> [M, n]."""
    block_count, _, columns = packed.shape
    weights = np.stack(bit_positions(packed, bits), axis=2).astype(np.float32)  # [k_blocks, bytes, 8 / bits, n]
    weights = weights.reshape(block_count, block_size, columns)  # weight j of a block: byte j // (8 / bits)
    weights -= zero_points[:, None, :]  # in place: a new array for each step costs more than the arithmetic
    weights *= scales[:, None, :]
    return rows @ weights.reshape(-1, columns)[: rows.shape[1]]  # [M, n]


def blocks_of(rows, block_count, block_size):
    """rows [M, K] cut into k_blocks blocks of block_size along K, the tail block zero padded ->
    [M, k_blocks, block_size]."""
    m, k = rows.shape
    padded = np.zeros((m, block_count * block_size), np.float32)
    padded[:, :k] = rows
    return padded.reshape(m, block_count, block_size)


def bit_positions(packed, bits):
    """The n-bit values of uint8 PACKED by their place in a byte, low bits first: 8 / bits arrays of PACKED's shape."""
    mask = np.uint8((1 << bits) - 1)
    return [(packed >> np.uint8(shift)) & mask for shift in range(0, 8, bits)]


def unpack_bits(packed, bits, count):
    """The first `count` n-bit values along the last axis of uint8 `packed`, low bits first."""
    values = np.stack(bit_positions(packed, bits), axis=-1)  # [..., bytes, 8 / bits]
    return values.reshape(*packed.shape[:-1], -1)[..., :count]  # [..., count]


def unpack_weights(b, scales, zero_points, N, bits, block_size):
    """(B - zero_point) as float32 [N, k_blocks, block_size] and the scales as [N, k_blocks]."""
    block_count = b.shape[1]
    quantized = unpack_bits(b, bits, block_size).astype(np.float32)  # [N, k_blocks, block_size]
    zero_points = block_zero_points(zero_points, N, bits, block_count)  # [N, k_blocks]
    return quantized - zero_points[..., None], scales.reshape(N, block_count)


def block_zero_points(zero_points, N, bits, block_count):
    """Each block's zero point as float32 [N, k_blocks]: unpacked from n-bit packed uint8, given as floats, or
    2^(bits - 1) by default."""
    if zero_points is None:
        return np.full((N, block_count), 2 ** (bits - 1), np.float32)
    if zero_points.dtype == np.uint8:
        return unpack_bits(zero_points.reshape(N, -1), bits, block_count).astype(np.float32)
    return zero_points.reshape(N, block_count).astype(np.float32)


def int8_rounded(rows, block_size):
    """A as MLAS sees it: each block of block_size values along K rounded symmetrically to int8, then
    scaled back to float32. The tail block is zero padded."""
    m, k = rows.shape
    blocks = blocks_of(rows, -(-k // block_size), block_size)  # [M, k_blocks, block_size]
    max_abs = np.abs(blocks).max(axis=-1, keepdims=True)  # [M, k_blocks, 1]
    nonzero = max_abs != 0
    # 127 / max|a| in one division, not 1 / scale: the two can differ by an ulp and flip a rounding
    inverse_scale = np.divide(INT8_MAX, max_abs, out=np.zeros_like(max_abs), where=nonzero)
    values = np.rint(blocks * inverse_scale)  # round half to even, like _MM_ROUND_NEAREST
    return (values * (max_abs / INT8_MAX)).reshape(m, -1)[:, :k]  # [M, K]
