"""The inputs a decoder graph declares, and the checks on values a program feeds to them.

A generator feeds the inputs it owns itself: input_ids, attention_mask, position_ids and the KV cache, as
genai_config.json names them. Any other input of model.onnx is an *extra* input, fed by the program:
with `set_model_input`, or as the parameters of an active LoRA adapter. An extra input that has an
initializer of the same name has a default (onnxruntime uses the initializer unless the input is fed;
Olive's LoRA inputs default to empty, rank-0 tensors this way), so feeding it is optional; one without a
default must be fed before the model first runs, but for the few the peer feeds itself when the program
does not (its PresetExtraInputs): `num_logits_to_keep`, and any `onnx::Neg_*` input (torch's export of
the same argument), both an int64 [1] holding 0, which asks for every position's logits.

Both engines read the declarations here, from model.onnx without its weights, so a value one engine
accepts the other accepts too, and a bad one is refused before any state changes, with its name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from gentwin.config import ConfigError, GenaiConfig
from gentwin.errors import ArgumentTypeError, GentwinError, array, text


PRESET_NAME, PRESET_PREFIX = "num_logits_to_keep", "onnx::Neg_"


def preset_value(name: str) -> np.ndarray | None:
    """What the peer feeds input NAME when nobody else does, or None if it feeds nothing."""
    if name == PRESET_NAME or name.startswith(PRESET_PREFIX):
        return np.zeros(1, dtype=np.int64)                                                   # [1]
    return None


class ModelInputError(GentwinError):
    """A value fed to the model names no extra input of it, or does not fit the input's declaration."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple  # per dimension: a size (int), a symbolic name (str), or None where undeclared
    has_default: bool  # an initializer of the same name supplies the value when the input is not fed

    def describe(self) -> str:
        dims = ", ".join("?" if dim is None else str(dim) for dim in self.shape)
        return f"{self.name} ({self.dtype}, [{dims}])"


def _dimension(dim: onnx.TensorShapeProto.Dimension):
    if dim.HasField("dim_value"):
        return dim.dim_value
    return dim.dim_param or None


def declared_shape(value: onnx.ValueInfoProto) -> tuple:
    """The shape a graph declares for a tensor: per dimension a size, a symbolic name, or None where undeclared."""
    return tuple(_dimension(dim) for dim in value.type.tensor_type.shape.dim)


def input_specs(proto: onnx.ModelProto, model_path: str) -> dict[str, InputSpec]:
    """The inputs the graph PROTO (read from MODEL_PATH) declares, by name."""
    defaults = {tensor.name for tensor in proto.graph.initializer}
    specs = {}
    for value in proto.graph.input:
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or tensor_type.elem_type not in onnx.helper.get_all_tensor_dtypes():
            raise ConfigError(f"{model_path}: input {value.name!r} is not a tensor of a known element type")
        specs[value.name] = InputSpec(
            name=value.name,
            dtype=np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)),
            shape=declared_shape(value),
            has_default=value.name in defaults,
        )
    return specs


def read_input_specs(model_path: str) -> dict[str, InputSpec]:
    """The inputs model.onnx declares, by name (its weights are not read)."""
    return input_specs(onnx.load(model_path, load_external_data=False), model_path)


def generator_inputs(config: GenaiConfig) -> set[str]:
    """The input names a generator feeds itself, whether or not this model declares them."""
    decoder = config.decoder
    names = {decoder.input_names[key] for key in ("input_ids", "attention_mask", "position_ids")}
    return names | set(decoder.state_input_names())


class ExtraInputs:
    """The extra inputs of one model: which there are, and the check of a value fed to one of them."""

    def __init__(self, specs: dict[str, InputSpec], config: GenaiConfig):
        owned = generator_inputs(config)
        self.owned = owned & set(specs)
        self.specs = {name: spec for name, spec in specs.items() if name not in owned}

    def check(self, name: str, value, source: str) -> np.ndarray:
        """VALUE as the array to feed to input NAME, copied; raises naming SOURCE if it does not fit."""
        text(name, f"{source}: the input name")
        if name in self.owned:
            raise ModelInputError(f"{source}: input {name!r} is fed by the generator itself and cannot be set")
        spec = self.specs.get(name)
        if spec is None:
            raise ModelInputError(f"{source}: the model has no input named {name!r}; "
                                  f"its extra inputs are {self.listing()}")
        given = array(value, f"{source}: the value of input {name!r}")
        if given.dtype != spec.dtype:
            raise ArgumentTypeError(f"{source}: input {name!r} takes {spec.dtype}, got {given.dtype}")
        if given.ndim != len(spec.shape) or any(
                isinstance(want, int) and got != want for got, want in zip(given.shape, spec.shape)):
            raise ModelInputError(f"{source}: input {spec.describe()} cannot take an array of shape {given.shape}")
        return np.array(given, order="C", copy=True)

    def presets(self) -> dict[str, np.ndarray]:
        """The values the generator feeds, as the peer does, to the extra inputs without a default that it
        knows (preset_value), by name; the program's own values (set_model_input) replace them."""
        values = {name: preset_value(name) for name, spec in self.specs.items() if not spec.has_default}
        return {name: value for name, value in values.items() if value is not None}

    def check_runnable(self, fed: set[str]) -> None:
        """Raise, before the model first runs, if an extra input without a default is neither in FED nor
        preset, or a preset one is not declared int64 (the peer's run then fails in onnxruntime)."""
        presets = self.presets()
        for name in sorted(presets):
            if name not in fed and self.specs[name].dtype != np.int64:
                raise ModelInputError(f"Unexpected input data type. Actual: (tensor(int64)) , expected: "
                                      f"(tensor({self.specs[name].dtype})): input {name!r} is fed by the generator "
                                      "as onnxruntime-genai feeds it, an int64 [1] holding 0; feed it with "
                                      "set_model_input to give it another type")
        missing = sorted(name for name, spec in self.specs.items()
                         if not spec.has_default and name not in fed and name not in presets)
        if missing:
            raise ModelInputError(f"Missing Input: {missing[0]} (the model needs input(s) {', '.join(missing)}, "
                                  "which have no default: set them with set_model_input before append_tokens)")

    def listing(self) -> str:
        return ", ".join(spec.describe() for spec in self.specs.values()) or "none"
