"""numpy's BLAS held, while the decoder runs, to the threads the peer's onnxruntime session takes.

The peer multiplies on intra_op_num_threads threads: genai_config.json's session option, else half the logical
CPUs (one on a 2-CPU machine). OpenBLAS, which numpy's wheels ship, starts one thread per CPU; on a machine
busy with other work a small product then waits for threads the OS has not scheduled yet (measured on 2 shared
CPUs: a [1, 576] @ [576, 1536] product took 8 ms on two threads and 0.05 ms on one, and a decode step of
SmolLM2-135M makes 151 of them).

The count is set through OpenBLAS's own C function in the library numpy has loaded (the scipy-openblas build
of numpy's wheels, or a system libopenblas), and given back after the run. With another BLAS, or where the
library cannot be found, nothing changes: only the speed depends on it, never a result.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading

import numpy  # noqa: F401 - loaded first, so that its BLAS library is among the process's mapped files

# (set, get) function names, scipy-openblas's 64-bit-integer build first (numpy's wheels)
FUNCTION_NAMES = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


def _loaded_openblas():
    """(set, get) of the OpenBLAS library this process has loaded, or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:  # not Linux
        return None
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in FUNCTION_NAMES:
            if hasattr(library, set_name) and hasattr(library, get_name):
                return getattr(library, set_name), getattr(library, get_name)
    return None


class BlasThreads:
    """Runs that hold the BLAS to a thread count. Runs on several Python threads at once share the first one's
    count, and the count from before is given back when the last of them ends."""

    def __init__(self):
        self._functions = _loaded_openblas()
        self._lock = threading.Lock()
        self._running = 0
        self._count_before = None

    @contextlib.contextmanager
    def limited_to(self, count: int):
        if self._functions is None:
            yield
            return
        set_threads, get_threads = self._functions
        with self._lock:
            if self._running == 0:
                self._count_before = get_threads()
                set_threads(count)
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    set_threads(self._count_before)


BLAS_THREADS = BlasThreads()
