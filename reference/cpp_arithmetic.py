"""Float32 arithmetic as the peer's C++ does it, where the chosen token depends on the last bit.

- glibc's expf, logf and powf, which are not correctly rounded (numpy's exp/log/power round correctly);
- float32 sums in index order, as a `sum += v` loop adds (np.sum adds pairwise);
- libstdc++'s heap-based std::partial_sort, whose order of equal scores decides ties.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

F32 = np.float32

_libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
for _name, _arguments in (("expf", [ctypes.c_float]), ("logf", [ctypes.c_float]),
                          ("powf", [ctypes.c_float, ctypes.c_float])):
    getattr(_libm, _name).restype, getattr(_libm, _name).argtypes = ctypes.c_float, _arguments


def logf(x) -> np.float32:
    return F32(_libm.logf(float(x)))


def powf(x, y) -> np.float32:
    return F32(_libm.powf(float(x), float(y)))


def expf(x) -> np.ndarray:
    """float32 exp bit-identical to the C library's expf, which the peer calls.

    glibc's expf is not correctly rounded: for about 1 negative argument in 10**4 it differs from exp taken
    in double and rounded to float. Its error before rounding is below 2**-33 relative, so wherever the
    double result is farther than 2**-32 from a float32 rounding midpoint the two agree (checked for every
    float32 up to 88); the ~0.1% of arguments that close to a midpoint are handed to expf itself.
    """
    x = np.asarray(x, F32)
    wide = np.exp(x.astype(np.float64))  # [n]
    with np.errstate(over="ignore"):
        rounded = wide.astype(F32)  # [n]
        neighbour = np.nextafter(rounded, np.where(wide >= rounded, F32(np.inf), F32(-np.inf)))  # [n]
    with np.errstate(invalid="ignore"):  # inf - inf when exp overflows float32: not near, and expf agrees
        midpoint = (rounded.astype(np.float64) + neighbour) / 2
        near = np.abs(wide - midpoint) <= wide * 2.0**-32
    rounded[near] = [_libm.expf(v) for v in x[near].tolist()]
    return rounded


def float32_sum(values) -> np.float32:
    """A float32 sum in index order, as the peer's `sum += v` loop (np.sum would add pairwise)."""
    return running_sum(values)[-1] if len(values) else F32(0)


def running_sum(values, start=F32(0)) -> np.ndarray:
    """Float32 running sums in index order, continuing from start; np.cumsum accumulates sequentially."""
    with_start = np.concatenate([[F32(start)], np.asarray(values, F32)])  # [n + 1]
    return np.cumsum(with_start, dtype=F32)[1:]  # [n]


def partial_sort_descending(order, scores, first: int, middle: int) -> None:
    """std::partial_sort(order + first, order + middle, order + end, scores[a] > scores[b]) as libstdc++
    does it, in place: heap-select the best (middle - first) of order[first:], then heap-sort them.

    The sort is not stable; which of several equal scores come first, and which make the cut, is whatever
    this heap shuffle leaves, so it is reproduced move for move (std::__heap_select, std::__sort_heap).
    """
    ids = order[first:].tolist()  # the range being sorted
    key = np.asarray(scores, F32).tolist()  # float32 values compare the same as doubles
    before = lambda a, b: key[a] > key[b]  # noqa: E731  the comparator the peer passes
    size = middle - first
    _make_heap(ids, size, before)
    for i in range(size, len(ids)):  # heap-select: a better id than the heap's worst replaces it
        if before(ids[i], ids[0]):
            value, ids[i] = ids[i], ids[0]
            _adjust_heap(ids, 0, size, value, before)
    for last in range(size - 1, 0, -1):  # sort_heap: move the worst to the back, one at a time
        value, ids[last] = ids[last], ids[0]
        _adjust_heap(ids, 0, last, value, before)
    order[first:] = ids


def _make_heap(ids: list, size: int, before) -> None:
    """std::__make_heap on ids[:size]: sift down every parent, last parent first."""
    for parent in range((size - 2) // 2, -1, -1) if size >= 2 else ():
        _adjust_heap(ids, parent, size, ids[parent], before)


def _adjust_heap(ids: list, hole: int, size: int, value, before) -> None:
    """std::__adjust_heap: move the hole down to a leaf along the preferred children, then push value up
    from there (std::__push_heap). The heap's top is the id that is "before" no other, the worst score."""
    top = child = hole
    while child < (size - 1) // 2:
        child = 2 * (child + 1)
        if before(ids[child], ids[child - 1]):
            child -= 1
        ids[hole], hole = ids[child], child
    if size % 2 == 0 and child == (size - 2) // 2:
        child = 2 * (child + 1)
        ids[hole], hole = ids[child - 1], child - 1
    parent = (hole - 1) // 2
    while hole > top and before(ids[parent], value):
        ids[hole], hole = ids[parent], parent
        parent = (hole - 1) // 2
    ids[hole] = value
