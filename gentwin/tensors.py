"""Tensor and NamedTensors: onnxruntime-genai's containers for arrays handed to the API.

The peer wraps its C tensors in these; gentwin keeps a numpy array. A Tensor owns a C-ordered copy of
the array it is made from, so changing that array later changes nothing, and it converts back with
`as_numpy()` or, since it implements numpy's array protocol, wherever an array is taken
(`np.asarray(tensor)`, `generator.append_tokens(tensor)`). NamedTensors maps names to Tensors.
"""

from __future__ import annotations

import numpy as np
import onnx

from gentwin import errors
from gentwin.errors import GentwinError

# The numpy types the peer converts, and the ONNX element type numbers its Tensor.type() stands for.
SUPPORTED_DTYPES = tuple(np.dtype(t) for t in (
    np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64,
    np.float16, np.float32, np.float64))


class TensorNotFoundError(GentwinError, KeyError):
    """NamedTensors has no tensor of that name (a KeyError, and a RuntimeError as the peer raises)."""

    __str__ = Exception.__str__  # the message as written, not quoted as KeyError quotes its key


class Tensor:
    """An n-dimensional array of one numeric type (onnxruntime_genai.Tensor)."""

    def __init__(self, array: np.ndarray):
        if not isinstance(array, np.ndarray):
            raise errors.ArgumentTypeError(f"Tensor takes a numpy.ndarray, got {type(array).__name__}")
        if array.dtype not in SUPPORTED_DTYPES:
            raise errors.ArgumentTypeError(f"Tensor cannot hold dtype {array.dtype}; "
                            f"supported: {', '.join(str(dtype) for dtype in SUPPORTED_DTYPES)}")
        self._array = np.array(array, order="C", copy=True)

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def type(self) -> int:
        """The element type as ONNX numbers it (1 float32, 6 int32, 7 int64, 10 float16, ...).

        (The peer's type() fails: its return type is not registered with Python.)"""
        return onnx.helper.np_dtype_to_tensor_dtype(self._array.dtype)

    def as_numpy(self) -> np.ndarray:
        return self._array.copy()

    def data(self) -> memoryview:
        """The tensor's memory, writable. (The peer returns a capsule holding a raw pointer.)"""
        return memoryview(self._array)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self._array.astype(self._array.dtype if dtype is None else dtype, copy=bool(copy))

    def __repr__(self) -> str:
        return f"Tensor(shape={self.shape()}, dtype={self._array.dtype})"


class NamedTensors:
    """Tensors by name (onnxruntime_genai.NamedTensors); setting a numpy array stores a Tensor of it."""

    def __init__(self):
        self._tensors: dict[str, Tensor] = {}

    def __getitem__(self, name: str) -> Tensor:
        self._require(name)
        return self._tensors[name]

    def __setitem__(self, name: str, value) -> None:
        self._check_name(name)
        self._tensors[name] = value if isinstance(value, Tensor) else Tensor(value)

    def __delitem__(self, name: str) -> None:
        self._require(name)
        del self._tensors[name]

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    @staticmethod
    def _check_name(name) -> None:
        if not isinstance(name, str):
            raise errors.ArgumentTypeError(f"tensor names are str, got {errors.shown(name)}")

    def _require(self, name: str) -> None:
        self._check_name(name)
        if name not in self._tensors:
            raise TensorNotFoundError(f"no tensor named {name!r}; names: {self.keys()}")

    def keys(self) -> list[str]:
        """The names, in the order they were first set. (The peer's order is its hash map's.)"""
        return list(self._tensors)
