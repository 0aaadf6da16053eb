"""Devices: the peer's is_cuda_available() and friends, and the current GPU device id.

onnxruntime-genai answers is_X_available() by whether its build can use device X. gentwin answers per
engine, by whether the engine in hand can run on X: gentwin.reference runs numpy on the CPU and answers
False for every device (it accepts and ignores the execution providers a Config asks for);
gentwin.fast answers from the providers onnxruntime has (onnxruntime.get_available_providers()).

The current GPU device id is one setting for the whole process, as in the peer (whose getter and setter
crash a build without CUDA); gentwin keeps it here for an engine that places its sessions on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from numbers import Integral
from typing import NamedTuple

import numpy as np

# The devices the peer asks about, and the onnxruntime execution provider that runs each.
DEVICE_PROVIDERS = {
    "cuda": "CUDAExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
}


class DeviceChecks(NamedTuple):
    """One engine's answers, in the order of DEVICE_PROVIDERS."""

    is_cuda_available: Callable[[], bool]
    is_dml_available: Callable[[], bool]
    is_openvino_available: Callable[[], bool]
    is_qnn_available: Callable[[], bool]
    is_webgpu_available: Callable[[], bool]


def device_checks(usable_providers: Collection[str]) -> DeviceChecks:
    """The is_*_available functions of an engine that can use the onnxruntime providers USABLE_PROVIDERS."""
    usable = frozenset(usable_providers)

    def check(device: str, provider: str) -> Callable[[], bool]:
        def is_available() -> bool:
            return provider in usable

        is_available.__name__ = is_available.__qualname__ = f"is_{device}_available"
        is_available.__doc__ = f"Whether this engine can run on {device} (onnxruntime's {provider})."
        return is_available

    return DeviceChecks(*(check(device, provider) for device, provider in DEVICE_PROVIDERS.items()))


def to_host(array) -> np.ndarray:
    """ARRAY as a numpy array: a GPU array (CuPy's, or any with __cuda_array_interface__) is copied to the
    host; anything else is taken as it is. The API hands out numpy arrays whichever engine computed them."""
    return array.get() if hasattr(array, "__cuda_array_interface__") else np.asarray(array)


_current_gpu_device_id = 0


def set_current_gpu_device_id(device_id: int) -> None:
    global _current_gpu_device_id
    if isinstance(device_id, bool) or not isinstance(device_id, Integral):
        raise TypeError(f"the GPU device id must be an int, got {type(device_id).__name__}")
    if device_id < 0:
        raise ValueError(f"the GPU device id must be 0 or more, got {device_id}")
    _current_gpu_device_id = int(device_id)


def get_current_gpu_device_id() -> int:
    return _current_gpu_device_id
