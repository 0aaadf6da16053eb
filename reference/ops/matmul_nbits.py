"""com.microsoft MatMulNBits: Y = A @ dequantize(B) + bias with B quantized block-wise along K to n bits."""

import threading
import weakref

import numpy as np

from .contrib_op import ContribOp

FLOAT_ACCURACY_LEVELS = (0, 1)  # 0 = unset, 1 = fp32: dequantize B and multiply in float32
INT8_ACCURACY_LEVEL = 4  # A is quantized to int8 per block as well, products accumulate as integers
INT8_MAX = np.float32(127)
# Dequantized float32 weights (8x the bytes of 4-bit ones) kept for reuse, in all kernels of the process together
DEQUANTIZED_CACHE_BYTES = 96 * 2**20
# The float32 bytes of one slice of output columns (at least one column), dequantized and multiplied at a time
SLICE_BYTES = 8 * 2**20


class CacheBudget:
    """The bytes of dequantized weights that MatMulNBits kernels may keep, shared by all of them."""

    def __init__(self):
        self.used, self._lock = 0, threading.Lock()

    def reserve(self, size: int) -> bool:
        """Take SIZE bytes if they fit in DEQUANTIZED_CACHE_BYTES, and say whether they did."""
        with self._lock:
            if self.used + size > DEQUANTIZED_CACHE_BYTES:
                return False
            self.used += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.used -= size


CACHE_BUDGET = CacheBudget()


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

    Memory. The product is computed a slice of output columns at a time, each slice of B dequantized to
    float32 [K, columns] of at most SLICE_BYTES (one slice for the matrices of small models). B is an
    initializer, so the slices are kept for the next calls (keyed on the identity of the B, scales and
    zero_points arrays) while the process's dequantized weights fit in DEQUANTIZED_CACHE_BYTES, first come
    first served: a small model keeps all of them and multiplies at float32 speed, while a large one
    keeps those of its first layers and dequantizes the others at every call, so that its memory stays
    near the size of its packed weights (8 times less than float32 for 4 bits). A kept weight gives its
    bytes back when its kernel is freed. Kept or not, every slice is multiplied the same way, so the
    result does not depend on what the cache holds.
    """

    implemented_values = {
        "bits": (2, 4, 8),
        "accuracy_level": (*FLOAT_ACCURACY_LEVELS, INT8_ACCURACY_LEVEL),
        "weight_prepacked": (0,),
    }
    unimplemented_inputs = {4: "g_idx"}

    def __init__(self, onnx_node, run_params):
        super().__init__(onnx_node, run_params)
        self._kept = None  # ((B, scales, zero_points) they were dequantized from, the weight slices, their bytes)
        self._release = None  # gives the kept slices' bytes back to CACHE_BUDGET

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
        slices = self._weight_slices((b, scales, zero_points), K, N, bits, block_size)  # each [K, columns]
        y = np.concatenate([rows @ weights for weights in slices], axis=1)  # [M, N]
        if bias is not None:
            y = y + bias
        return (y.reshape(*a.shape[:-1], N).astype(a.dtype),)  # [..., N]

    def _weight_slices(self, sources, K, N, bits, block_size):
        """The dequantized weights of `sources` = (B, scales, zero_points), slice by slice of output columns:
        the kept list while they are the same arrays, else a new list if the budget takes it, else a
        generator that dequantizes each slice as it is multiplied."""
        if self._kept is not None and all(x is y for x, y in zip(self._kept[0], sources)):
            return self._kept[1]
        if self._release is not None:
            self._release()
            self._kept, self._release = None, None
        columns = max(1, SLICE_BYTES // (4 * K))
        slices = (dequantized_columns(*sources, start, min(start + columns, N), K, N, bits, block_size)
                  for start in range(0, N, columns))
        size = 4 * K * N
        if not CACHE_BUDGET.reserve(size):
            return slices
        self._kept = sources, list(slices), size
        self._release = weakref.finalize(self, CACHE_BUDGET.release, size)
        return self._kept[1]


def dequantized_columns(b, scales, zero_points, start, stop, K, N, bits, block_size):
    """Output columns [start, stop) of B dequantized: float32 [K, stop - start], contiguous.

    The bytes are unpacked with the columns last, so that no float32 array needs transposing; each weight
    is (q - zero_point) * scale in float32 as in unpack_weights, so the values are the same."""
    block_count = b.shape[1]
    columns = np.ascontiguousarray(b[start:stop].transpose(1, 2, 0))  # [k_blocks, block bytes, n]
    shifts = np.arange(0, 8, bits, dtype=np.uint8)[:, None]  # [8 / bits, 1]
    quantized = (columns[:, :, None, :] >> shifts) & np.uint8((1 << bits) - 1)  # [k_blocks, bytes, 8 / bits, n]
    weights = quantized.reshape(block_count, -1, stop - start)[:, :block_size].astype(np.float32)  # [k_blocks, bs, n]
    if zero_points is not None:
        zero_points = zero_points.reshape(N, -1)[start:stop]  # [n, packed or k_blocks]
    weights -= block_zero_points(zero_points, stop - start, bits, block_count).T[:, None, :]
    weights *= scales.reshape(N, block_count)[start:stop].T[:, None, :]
    return weights.reshape(-1, stop - start)[:K]  # [K, n]


def unpack_bits(packed, bits, count):
    """The first `count` n-bit values along the last axis of uint8 `packed`, low bits first."""
    shifts = np.arange(0, 8, bits, dtype=np.uint8)  # [8 / bits]
    values = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)  # [..., bytes, 8 / bits]
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
