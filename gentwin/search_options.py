"""The search options of `GeneratorParams.set_search_options`: names, types, defaults and their checks.

Shared by both engines, so an option one accepts the other accepts, with the same error for a bad value.
"""

from __future__ import annotations

import math
import re
from numbers import Real

import numpy as np

from gentwin.config import EXTRA_SEARCH_DEFAULTS, PEER_SEARCH_DEFAULTS
from gentwin.errors import GentwinError, shown

MAX_BATCH_SIZE = 32  # onnxruntime-genai's limit, kept so that both accept the same programs
MAX_NUM_BEAMS = 32

# chunk_size is a peer option (prefill in chunks); it is accepted but only changes how prefill is split.
SEARCH_DEFAULTS = dict(PEER_SEARCH_DEFAULTS, chunk_size=0, **EXTRA_SEARCH_DEFAULTS)
BOOL_OPTIONS = {"do_sample", "early_stopping", "past_present_share_buffer"}
INT_OPTIONS = {
    "min_length", "max_length", "batch_size", "num_beams", "num_return_sequences", "top_k",
    "no_repeat_ngram_size", "random_seed", "chunk_size",
}
MAPPING_OPTIONS = {"logit_bias"}


class SearchOptionError(GentwinError, ValueError):
    """A search option is unknown, of the wrong type, or out of range."""


def resolved(*layers: dict) -> dict:
    """gentwin's defaults overlaid with each of LAYERS in turn (the folder's genai_config.json search, then what
    the caller set), every option checked and coerced."""
    merged = dict(SEARCH_DEFAULTS)
    for layer in layers:
        merged.update(layer)
    return {name: coerce_option(name, value) for name, value in merged.items()}


def coerce_option(name: str, value):
    """Check one option's name and type; return it as the Python type gentwin keeps it in. As the peer does, a
    bool option takes only True or False (not 1), an int option a whole float too (max_length=16.0); ranges
    are checked when the Generator is made (check_for_generator), where the peer checks them."""
    if name not in SEARCH_DEFAULTS:
        raise SearchOptionError(f"unknown search option {name!r}; known options: {', '.join(sorted(SEARCH_DEFAULTS))}")
    if name in BOOL_OPTIONS:
        if not isinstance(value, (bool, np.bool_)):
            raise SearchOptionError(f"search option {name!r} must be a bool, got {shown(value)}")
        return bool(value)
    if name in MAPPING_OPTIONS:
        return _coerce_logit_bias(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) or not math.isfinite(value):
        raise SearchOptionError(f"search option {name!r} must be a finite number, got {shown(value)}")
    if name in INT_OPTIONS:
        if value != int(value):
            raise SearchOptionError(f"search option {name!r} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _coerce_logit_bias(value) -> dict:
    """{token_id: bias}; JSON-style string keys are accepted."""
    if not isinstance(value, dict):
        raise SearchOptionError(f"search option 'logit_bias' must be a dict {{token_id: bias}}, got {value!r}")
    bias = {}
    for token, amount in value.items():
        is_int = isinstance(token, (int, np.integer)) and not isinstance(token, (bool, np.bool_))
        if not (is_int or isinstance(token, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", token)):
            # a float key such as 5.7 is refused, not taken for token 5
            raise SearchOptionError(f"logit_bias key {token!r} is not a token id (an int, or a str of one)")
        token_id = int(token)
        if isinstance(amount, (bool, np.bool_)) or not isinstance(amount, Real) or not math.isfinite(amount):
            raise SearchOptionError(f"logit_bias[{token!r}] must be a finite number, got {shown(amount)}")
        bias[token_id] = float(amount)
    return bias


def as_peer_dict(options: dict) -> dict:
    """The dict `get_search_options` returns: numbers as floats and booleans as bools, like the peer."""
    def as_peer_shows(name, value):
        return value if name in BOOL_OPTIONS else dict(value) if name in MAPPING_OPTIONS else float(value)
    return {name: as_peer_shows(name, value) for name, value in sorted(options.items())}


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
    if not -(2**31) <= options["random_seed"] < 2**31:
        raise SearchOptionError(f"random_seed ({options['random_seed']}) must fit a 32-bit signed int "
                                "(negative: a fresh random seed)")
    outside = [token for token in options["logit_bias"] if not 0 <= token < vocab_size]
    if outside:
        raise SearchOptionError(f"logit_bias token id {outside[0]} is outside the vocabulary [0, {vocab_size})")
    validate_sampling_options(options, vocab_size)


def sampling_method(options: dict) -> str:
    """'greedy', 'top_k', 'top_p' or 'top_k_top_p', decided as Generator::InitializeSamplingMethod does."""
    do_sample, top_k, top_p, temperature = sampling_options(options)
    if not do_sample or top_k == 1 or temperature == 0:
        return "greedy"
    if 0 < top_p < 1 and top_k > 1:
        return "top_k_top_p"
    if top_k > 1:
        return "top_k"
    return "top_p"  # top_k == 0: nucleus over the whole vocabulary, whatever top_p is


def validate_sampling_options(options: dict, vocab_size: int) -> None:
    """Raise ValueError naming the option when sampling is asked for with options that make no sense.

    Options are checked only when they take effect, as the peer checks them: greedy search (do_sample false,
    top_k 1 or temperature 0) ignores top_k, top_p and temperature. Two checks are gentwin's own; the peer
    accepts these and samples anyway: temperature < 0 (which turns the distribution upside down) and top_p 0
    with top_k 0 (an empty nucleus, which the peer turns into its first-sorted token).
    """
    if sampling_method(options) == "greedy":
        return
    _, top_k, top_p, temperature = sampling_options(options)
    if options.get("num_beams", 1) != 1:
        raise SearchOptionError(f"num_beams must be 1 when sampling (do_sample=True), got {options['num_beams']}")
    if top_k < 0:
        raise SearchOptionError(f"top_k must be 0 or greater, got {top_k}")
    if top_k > vocab_size:
        raise SearchOptionError(f"top_k ({top_k}) must be at most vocab_size ({vocab_size})")
    if not 0 <= top_p <= 1:
        raise SearchOptionError(f"top_p must be between 0 and 1 when sampling, got {float(top_p)}")
    if top_p == 0 and top_k == 0:
        raise SearchOptionError("top_p must be in (0, 1] when sampling with top_k 0 (nucleus sampling), got 0.0")
    if not temperature > 0:
        raise SearchOptionError(f"temperature must be greater than 0 when sampling, got {float(temperature)}")


def sampling_options(options: dict) -> tuple[bool, int, np.float32, np.float32]:
    """do_sample, top_k, top_p, temperature with the peer's defaults; the peer keeps the two reals as float32,
    so a top_p of 0.99999999 is 1 and a temperature of 1e-50 is 0 there and here."""
    option = lambda name: options.get(name, SEARCH_DEFAULTS[name])  # noqa: E731
    return bool(option("do_sample")), int(option("top_k")), np.float32(option("top_p")), np.float32(option("temperature"))
