"""Where the fast engine's buffers live: host memory (numpy) for the CPU execution provider, device memory
(CuPy) for the CUDA one.

onnxruntime reads inputs and writes outputs straight into these buffers through IO binding, given their
raw addresses, so the KV cache and the logits never travel between runs. Everything the engine allocates
goes through `Device`, so the same code runs on both; cupy is imported only when CUDA is asked for.
"""

from __future__ import annotations

import sys

import numpy as np

from gentwin.errors import GentwinError


def array_module(array):
    """numpy for a host array, cupy for a device one (cupy is loaded already if such an array exists)."""
    return np if isinstance(array, (np.ndarray, np.generic)) else sys.modules["cupy"]


class Device:
    """An array module (numpy or cupy) and the onnxruntime device name its buffers are bound with."""

    def __init__(self, name: str, device_id: int = 0):
        self.name, self.device_id = name, device_id
        if name == "cuda":
            try:
                import cupy
            except ImportError as error:
                raise GentwinError("the CUDA provider in gentwin.fast needs cupy: pip install 'gentwin[gpu]'") from error
            # CuPy allocates on, and launches kernels for, its current device: make it the session's GPU
            cupy.cuda.Device(device_id).use()
            self.xp = cupy
        else:
            self.xp = np

    @property
    def is_host(self) -> bool:
        return self.xp is np

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def address(self, array) -> int:
        return array.ctypes.data if self.is_host else array.data.ptr

    def bind_input(self, binding, name: str, array) -> None:
        binding.bind_input(name, self.name, self.device_id, array.dtype, array.shape, self.address(array))

    @staticmethod
    def bind_host_input(binding, name: str, array: np.ndarray, overrides_initializer: bool = False) -> None:
        """Small per-run inputs (ids, mask, positions, extra inputs) stay numpy; onnxruntime copies them where
        needed. bind_cpu_input takes the array itself, in a sixth of bind_input's time (which builds a device
        description and reads the address through ctypes on every call: 1.5 against 9 us), but it finds only
        the graph's declared inputs, not an initializer fed in its place (a LoRA weight's default)."""
        if overrides_initializer:
            binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        else:
            binding.bind_cpu_input(name, array)

    def bind_output(self, binding, name: str, array) -> None:
        binding.bind_output(name, self.name, self.device_id, array.dtype, array.shape, self.address(array))

    def to_device(self, array: np.ndarray):
        return array if self.is_host else self.xp.asarray(array)
