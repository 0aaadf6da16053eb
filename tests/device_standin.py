"""A stand-in for CuPy on machines without a GPU, to run gentwin.fast's device code paths on the CPU.

Its arrays hold numpy data but behave like CuPy's where it matters for correctness: numpy functions cannot
take them (implicit conversion raises TypeError, as CuPy's does), they come to the host only through
`.get()`, and results stay stand-in arrays. So a device path that slips into numpy, or loses the device
somewhere, fails here as it would on a GPU; what it computes is numpy's, so tokens must match exactly.
"""

from __future__ import annotations

import contextlib
import sys
import types

import numpy as np


class DeviceArray:
    def __init__(self, data):
        self._data = np.asarray(data)

    @property
    def __cuda_array_interface__(self) -> dict:  # what gentwin.devices.to_host looks for
        return {"shape": self.shape, "typestr": self.dtype.str, "version": 3}

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly. (device stand-in)")

    def get(self) -> np.ndarray:
        return self._data.copy()

    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)

    def __len__(self):
        return len(self._data)

    def __getitem__(self, key):
        return DeviceArray(self._data[_on_device(key)])

    def __setitem__(self, key, value):
        self._data[_on_device(key)] = _on_device(value)

    def astype(self, dtype, copy=True):
        return DeviceArray(self._data.astype(dtype, copy=copy))

    def copy(self):
        return DeviceArray(self._data.copy())

    def max(self):
        return DeviceArray(self._data.max())

    def any(self):
        return DeviceArray(self._data.any())

    def __neg__(self):
        return DeviceArray(-self._data)

    def __eq__(self, other):
        return DeviceArray(self._data == _on_device(other))

    def __bool__(self):  # CuPy synchronises and answers for a single element
        return bool(self._data)

    def __int__(self):
        return int(self._data)


def _on_device(value):
    """Indices and values given to a device array: device arrays, Python and numpy scalars, slices."""
    if isinstance(value, tuple):
        return tuple(_on_device(item) for item in value)
    if isinstance(value, DeviceArray):
        return value._data
    if isinstance(value, np.ndarray) and value.ndim > 0:
        raise TypeError("a host numpy array given to a device array (device stand-in): move it with asarray")
    return value


def _function(numpy_function):
    def on_device(*args, **kwargs):
        return DeviceArray(numpy_function(*(_on_device(arg) for arg in args), **kwargs))

    return on_device


module = types.ModuleType("cupy", __doc__)
for name in ("argmax", "argpartition", "argsort", "arange", "count_nonzero", "isnan", "zeros"):
    setattr(module, name, _function(getattr(np, name)))
module.asarray = lambda value: value if isinstance(value, DeviceArray) else DeviceArray(np.array(value))
module.ndarray = DeviceArray


@contextlib.contextmanager
def standin_cupy():
    """The stand-in as `cupy` in sys.modules, where gentwin.fast.device.array_module finds it, for a while."""
    previous = sys.modules.get("cupy")
    sys.modules["cupy"] = module
    try:
        yield module
    finally:
        if previous is None:
            del sys.modules["cupy"]
        else:
            sys.modules["cupy"] = previous
