"""The peer's process-wide logging and telemetry switches, accepted and checked; gentwin logs nothing.

onnxruntime-genai can trace its runs (set_log_options) to a file or a callback (set_log_callback) and
sends telemetry events unless told not to. gentwin sends no telemetry and writes no log: it takes the
same options, with the same names and types, so that programs written for the peer run unchanged, and
refuses a misspelled one instead of ignoring it.
"""

from __future__ import annotations

from collections.abc import Callable

from gentwin.errors import GentwinError

# The options the peer knows (src/logging.cpp): switches, and the one string option.
FLAG_OPTIONS = (
    "enabled", "ansi_tags", "warning", "generate_next_token", "append_next_tokens", "hit_eos",
    "hit_max_length", "model_input_values", "model_output_shapes", "model_output_values", "model_logits",
    "ort_lib", "value_stats",
)
STRING_OPTIONS = ("filename",)

log_options: dict[str, bool | str] = {}
log_callback: Callable[[str], object] | None = None


def set_log_options(**options) -> None:
    for name, value in options.items():
        if name in FLAG_OPTIONS:
            if not isinstance(value, bool):
                raise TypeError(f"log option {name!r} takes a bool, got {value!r}")
        elif name in STRING_OPTIONS:
            if not isinstance(value, str):
                raise TypeError(f"log option {name!r} takes a str, got {value!r}")
        else:
            raise GentwinError(f"unknown log option {name!r}; known: {', '.join(FLAG_OPTIONS + STRING_OPTIONS)}")
    log_options.update(options)


def set_log_callback(callback: Callable[[str], object] | None) -> None:
    global log_callback
    if callback is not None and not callable(callback):
        raise TypeError(f"set_log_callback takes a function or None, got {type(callback).__name__}")
    log_callback = callback


def enable_telemetry_events() -> None:
    """Accepted; gentwin has no telemetry."""


def disable_telemetry_events() -> None:
    """Accepted; gentwin has no telemetry."""
