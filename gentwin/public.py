"""The engine-neutral part of onnxruntime_genai's Python names, one list for both engines.

An engine package exports these and adds its own Model and device checks:

    from gentwin.public import *                      # noqa: F403
    from gentwin.public import __all__ as PUBLIC_NAMES

README.md, "Compatibility", lists every name of the peer's module and gentwin's status for it.
"""

from gentwin.adapters import Adapters
from gentwin.api import Config, Generator, GeneratorParams
from gentwin.devices import get_current_gpu_device_id, set_current_gpu_device_id
from gentwin.errors import GentwinError
from gentwin.logging_options import (
    disable_telemetry_events,
    enable_telemetry_events,
    set_log_callback,
    set_log_options,
)
from gentwin.tensors import NamedTensors, Tensor
from gentwin.tokenizer import Tokenizer, TokenizerStream

__all__ = [
    "Adapters",
    "Config",
    "Generator",
    "GeneratorParams",
    "GentwinError",
    "NamedTensors",
    "Tensor",
    "Tokenizer",
    "TokenizerStream",
    "disable_telemetry_events",
    "enable_telemetry_events",
    "get_current_gpu_device_id",
    "set_current_gpu_device_id",
    "set_log_callback",
    "set_log_options",
]
