"""The search options of `GeneratorParams.set_search_options`: names, types, defaults and their checks.

Shared by both engines, so an option one accepts the other accepts, with the same error for a bad value.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from gentwin.config import EXTRA_SEARCH_DEFAULTS, PEER_SEARCH_DEFAULTS

MAX_BATCH_SIZE = 32  # onnxruntime-genai's limit, kept so that both accept the same programs
MAX_NUM_BEAMS = 32

# chunk_size is a peer option (prefill in chunks); it is accepted but only changes how prefill is split.
SEARCH_DEFAULTS = dict(PEER_SEARCH_DEFAULTS, chunk_size=0, **EXTRA_SEARCH_DEFAULTS)
BOOL_OPTIONS = {"do_sample", "early_stopping", "past_present_share_buffer"}
INT_OPTIONS = {
    "min_length", "max_length", "batch_size", "num_beams", "num_return_sequences", "top_k",
    "no_repeat_ngram_size", "random_seed", "chunk_size",
}
FLOAT_OPTIONS = set(SEARCH_DEFAULTS) - BOOL_OPTIONS - INT_OPTIONS


class SearchOptionError(ValueError):
    """A search option is unknown, of the wrong type, or out of range."""


def coerce_option(name: str, value):
    """Check one option's name and type; return it as the Python type gentwin keeps it in."""
    if name not in SEARCH_DEFAULTS:
        raise SearchOptionError(f"unknown search option {name!r}; known options: {', '.join(sorted(SEARCH_DEFAULTS))}")
    if name in BOOL_OPTIONS:
        if not isinstance(value, (bool, Integral)):
            raise SearchOptionError(f"search option {name!r} must be a bool, got {value!r}")
        return bool(value)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise SearchOptionError(f"search option {name!r} must be a finite number, got {value!r}")
    if name in INT_OPTIONS:
        if value != int(value):
            raise SearchOptionError(f"search option {name!r} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def as_peer_dict(options: dict) -> dict:
    """The dict `get_search_options` returns: numbers as floats and booleans as bools, like the peer."""
    return {name: value if name in BOOL_OPTIONS else float(value) for name, value in sorted(options.items())}


def check_for_generator(options: dict, context_length: int, vocab_size: int) -> None:
    """Checks made when a Generator is created, the values now being final."""
    max_length = options["max_length"]
    if not 1 <= max_length <= context_length:
        raise SearchOptionError(f"max_length ({max_length}) must be in [1, context_length ({context_length})]")
    if not 1 <= options["batch_size"] <= MAX_BATCH_SIZE:
        raise SearchOptionError(f"batch_size ({options['batch_size']}) must be in [1, {MAX_BATCH_SIZE}]")
    num_beams = options["num_beams"]
    if not 1 <= num_beams <= MAX_NUM_BEAMS:
        raise SearchOptionError(f"num_beams ({num_beams}) must be in [1, {MAX_NUM_BEAMS}]")
    if num_beams > vocab_size:
        raise SearchOptionError(f"num_beams ({num_beams}) must not exceed vocab_size ({vocab_size})")
    if not 1 <= options["num_return_sequences"] <= num_beams:
        raise SearchOptionError(
            f"num_return_sequences ({options['num_return_sequences']}) must be in [1, num_beams ({num_beams})]")
    for name in ("min_length", "no_repeat_ngram_size", "chunk_size"):
        if options[name] < 0:
            raise SearchOptionError(f"{name} ({options[name]}) must be 0 or greater")
    if options["repetition_penalty"] <= 0:
        raise SearchOptionError(f"repetition_penalty ({options['repetition_penalty']}) must be greater than 0")
    if options["random_seed"] < -1 or options["random_seed"] >= 2**32:
        raise SearchOptionError(f"random_seed ({options['random_seed']}) must be -1 (random) or in [0, 2**32)")
