"""LoRA adapters: onnxruntime's .onnx_adapter files, read without onnxruntime, and the Adapters container.

A model made for adapters declares each LoRA weight as a graph input with a default (see
gentwin.graph_inputs); an adapter file holds values for some of those inputs. `Adapters(model)` loads
files under names; `generator.set_active_adapter(adapters, name)` makes a generator feed that adapter's
parameters from its next model run on. As in onnxruntime-genai:

* a generator may activate several adapters of one container; where two hold the same parameter, the one
  activated last wins, and any adapter wins over `set_model_input` for the same input;
* a generator can use only one container;
* an adapter stays in use until every generator that activated it is gone; unloading it before is an
  error. (gentwin tracks generators by weak reference: in CPython a generator is gone at `del`.)

gentwin checks an adapter against the model when it is loaded (every parameter must be an extra input
of the model, of its dtype and shape), where onnxruntime would fail at the next run.

The file format is a FlatBuffer, schema onnxruntime/lora/adapter_format/adapter_schema.fbs:

    table Parameter { name:string; dims:[int64]; data_type:TensorDataType; raw_data:[uint8]; }
    table Adapter { format_version:int; adapter_version:int; model_version:int; parameters:[Parameter]; }
    root_type Adapter; file_identifier "TORT";

FlatBuffers in brief, everything little-endian: the file starts with a uint32 offset to the root table,
then the 4-byte identifier. A table starts with an int32 that, subtracted from the table's position,
gives its vtable: uint16 vtable size, uint16 table size, then one uint16 per field, the field's offset
from the table's start (0: absent, the default applies). Scalars are stored in place; a string, vector
or sub-table field holds a uint32 offset from the field itself to the object. A vector is a uint32
count followed by its elements; a string is a vector of bytes (then a NUL); a vector of tables holds one
uint32 offset per element, each from the element's own position. `TensorDataType` numbers types as ONNX
does (1 float, 10 float16, ...).
"""

from __future__ import annotations

import math
import os
import struct
import weakref

import numpy as np
import onnx

from gentwin import errors
from gentwin.errors import GentwinError

FILE_IDENTIFIER = b"TORT"
FORMAT_VERSION = 1  # the only version onnxruntime writes and reads
_STRING_TYPE = onnx.TensorProto.STRING


class AdapterError(GentwinError):
    """An adapter file is unreadable or does not fit the model, or an adapter name is wrong."""


class _FlatBuffer:
    """Bounds-checked reads from one FlatBuffer; a corrupt offset raises AdapterError, never reads astray."""

    def __init__(self, data: bytes, path: str):
        self.data, self.path = data, path

    def corrupt(self, what: str) -> AdapterError:
        return AdapterError(f"{self.path} is not a valid onnxruntime adapter file: {what}")

    def read(self, fmt: str, position: int):
        size = struct.calcsize(fmt)
        if not 0 <= position <= len(self.data) - size:
            raise self.corrupt(f"offset {position} lies outside the file ({len(self.data)} bytes)")
        return struct.unpack_from(fmt, self.data, position)[0]

    def follow(self, position: int) -> int:
        """The position a uint32 offset stored at POSITION points to."""
        return position + self.read("<I", position)

    def vector(self, position: int, item_size: int) -> tuple[int, int]:
        """(first element's position, count) of the vector at POSITION, checked to fit in the file."""
        count = self.read("<I", position)
        start = position + 4
        if start + count * item_size > len(self.data):
            raise self.corrupt(f"a vector of {count} elements at {position} runs past the end of the file")
        return start, count


class _Table:
    """One table of a FlatBuffer: its fields by index, in schema order."""

    def __init__(self, buffer: _FlatBuffer, position: int):
        self.buffer, self.position = buffer, position
        vtable = position - buffer.read("<i", position)
        vtable_size = buffer.read("<H", vtable)
        self.field_offsets = [buffer.read("<H", vtable + 4 + 2 * i) for i in range(max(vtable_size - 4, 0) // 2)]

    def _field(self, index: int) -> int | None:
        offset = self.field_offsets[index] if index < len(self.field_offsets) else 0
        return self.position + offset if offset else None

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        field = self._field(index)
        return default if field is None else self.buffer.read(fmt, field)

    def _vector(self, index: int, item_size: int) -> tuple[int, int]:
        """(first element's position, count) of a vector field; an absent one is empty."""
        field = self._field(index)
        return (0, 0) if field is None else self.buffer.vector(self.buffer.follow(field), item_size)

    def bytes(self, index: int) -> bytes:
        start, count = self._vector(index, 1)
        return self.buffer.data[start : start + count]

    def string(self, index: int) -> str:
        """UTF-8, stored as a byte vector followed by a NUL."""
        start, count = self._vector(index, 1)
        if count and self.buffer.read("<B", start + count) != 0:
            raise self.buffer.corrupt("a string is not terminated by NUL")
        try:
            return self.buffer.data[start : start + count].decode("utf-8")
        except UnicodeDecodeError:
            raise self.buffer.corrupt("a string is not UTF-8") from None

    def int64s(self, index: int) -> list[int]:
        start, count = self._vector(index, 8)
        return list(struct.unpack_from(f"<{count}q", self.buffer.data, start))

    def tables(self, index: int) -> list[_Table]:
        start, count = self._vector(index, 4)
        return [_Table(self.buffer, self.buffer.follow(start + 4 * i)) for i in range(count)]


# Field indices, in the order adapter_schema.fbs declares them.
_ADAPTER_FORMAT_VERSION, _ADAPTER_VERSION, _MODEL_VERSION, _ADAPTER_PARAMETERS = range(4)
_PARAMETER_NAME, _PARAMETER_DIMS, _PARAMETER_DATA_TYPE, _PARAMETER_RAW_DATA = range(4)


def _parameter_array(buffer: _FlatBuffer, parameter: _Table) -> tuple[str, np.ndarray]:
    name = parameter.string(_PARAMETER_NAME)
    dims = parameter.int64s(_PARAMETER_DIMS)
    data_type = parameter.scalar(_PARAMETER_DATA_TYPE, "<i")
    if not name:
        raise buffer.corrupt("a parameter has no name")
    if any(dim < 0 for dim in dims):
        raise buffer.corrupt(f"parameter {name!r} has negative dimensions {dims}")
    if data_type == _STRING_TYPE or data_type not in onnx.helper.get_all_tensor_dtypes():
        raise buffer.corrupt(f"parameter {name!r} has data type {data_type}, which is not a numeric tensor type")
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))
    raw = parameter.bytes(_PARAMETER_RAW_DATA)
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise buffer.corrupt(f"parameter {name!r} of shape {dims} and type {dtype} holds {len(raw)} bytes, "
                             f"not {expected}")
    return name, np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(dims)


def read_adapter_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The parameters of an .onnx_adapter file, by name."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as adapter_file:
            data = adapter_file.read()
    except OSError as error:
        raise AdapterError(f"cannot read adapter file {path}: {error.strerror}") from error
    buffer = _FlatBuffer(data, path)
    if data[4:8] != FILE_IDENTIFIER:
        raise buffer.corrupt(f"it does not carry the identifier {FILE_IDENTIFIER.decode()}")
    root = _Table(buffer, buffer.follow(0))
    version = root.scalar(_ADAPTER_FORMAT_VERSION, "<i")
    if version != FORMAT_VERSION:
        raise buffer.corrupt(f"format version {version} is not the supported version {FORMAT_VERSION}")
    parameters = {}
    for parameter in root.tables(_ADAPTER_PARAMETERS):
        name, array = _parameter_array(buffer, parameter)
        if name in parameters:
            raise buffer.corrupt(f"parameter {name!r} appears twice")
        parameters[name] = array
    return parameters


class Adapters:
    """LoRA adapters loaded for one model, by name (onnxruntime_genai.Adapters)."""

    def __init__(self, model):
        extra_inputs = getattr(model, "extra_inputs", None)
        if extra_inputs is None:
            raise errors.ArgumentTypeError(f"Adapters takes a Model, got {type(model).__name__}")
        self._extra_inputs = extra_inputs
        self._parameters: dict[str, dict[str, np.ndarray]] = {}
        self._users: dict[str, weakref.WeakSet] = {}  # the live generators that activated each adapter

    def load(self, path: str | os.PathLike, name: str) -> None:
        """Read the adapter file at PATH and keep it under NAME, checked against the model's inputs."""
        if not isinstance(path, (str, os.PathLike)):
            raise errors.ArgumentTypeError(f"Adapters.load: path must be a str or os.PathLike, "
                                           f"got {errors.shown(path)}")
        errors.text(name, "Adapters.load: the adapter name")
        if name in self._parameters:
            raise AdapterError(f"an adapter named {name!r} is already loaded")
        where = f"adapter {name!r} ({os.fspath(path)})"
        parameters = {parameter: self._extra_inputs.check(parameter, array, where)
                      for parameter, array in read_adapter_file(path).items()}
        self._parameters[name] = parameters
        self._users[name] = weakref.WeakSet()

    def unload(self, name: str) -> None:
        users = self._users.get(errors.text(name, "Adapters.unload: the adapter name"))
        if users is None:
            raise AdapterError(f"no adapter named {name!r} is loaded; loaded: {sorted(self._parameters)}")
        if users:
            raise AdapterError(f"adapter {name!r} is still in use by {len(users)} generator(s); "
                               "it can be unloaded once they are gone")
        del self._parameters[name], self._users[name]

    def activate(self, name: str, generator) -> dict[str, np.ndarray]:
        """The parameters of adapter NAME, now in use by GENERATOR for as long as it lives."""
        if errors.text(name, "set_active_adapter: the adapter name") not in self._parameters:
            raise AdapterError(f"no adapter named {name!r} is loaded; loaded: {sorted(self._parameters)}")
        if generator.model.extra_inputs.specs != self._extra_inputs.specs:
            raise AdapterError("these adapters were loaded for a model whose extra inputs differ from the "
                               "generator's model")
        self._users[name].add(generator)
        return self._parameters[name]
