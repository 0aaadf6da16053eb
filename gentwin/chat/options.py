"""The options of a chat or generate call: Cohere's names, checked, and mapped onto gentwin's search options.

| option | meaning | search option |
|---|---|---|
| `max_tokens` | most tokens to generate (default: until EOS or the context is full) | - |
| `temperature` | 0 is greedy; above 0 samples | `do_sample`, `temperature` |
| `k` | sample among the k likeliest tokens; 0 turns it off | `top_k` |
| `p` | then among the likeliest tokens of total probability p, in (0, 1] | `top_p` |
| `seed` | seed of the sampling, in [0, 2**31); none: a fresh one every call | `random_seed` |
| `frequency_penalty`, `presence_penalty` | `logit -= penalty * count` / `-= penalty`, over the reply | same names |
| `logit_bias` | `{token_id: bias}` added to the logits | same name |
| `stop_sequences`, `end_sequences` | strings that end the text (see gentwin.chat.stops for where it is cut) | - |
| `num_generations` | 1 to 5 replies from one prefill | - |
| `truncate` | `NONE`, `START` or `END`: what to do with a prompt longer than the context allows | - |

Defaults are Cohere's, which differ between its two APIs: chat samples at temperature 0.3 and does not
truncate; generate samples at 0.75 and truncates the END. Both default to k 0 and p 0.75.

Generation i of a call with `seed` uses seed `(seed + i) % 2**31`, so the first generation of a call with
num_generations n equals the one generation of the same call with num_generations 1.
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Integral, Real

from gentwin import search_options

TRUNCATE_MODES = ("NONE", "START", "END")
MAX_GENERATIONS = 5  # Cohere's limit: it bounds the work one request can ask for
SEED_RANGE = 2**31   # the peer's random_seed is a 32-bit signed int; negative means "draw a fresh one"


@dataclasses.dataclass(frozen=True)
class Options:
    max_tokens: int | None = None
    temperature: float = 0.3
    k: int = 0
    p: float = 0.75
    seed: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop_sequences: tuple[str, ...] = ()
    end_sequences: tuple[str, ...] = ()
    logit_bias: dict = dataclasses.field(default_factory=dict)
    num_generations: int = 1
    truncate: str = "NONE"

    def search_options(self, generation: int, max_length: int) -> dict:
        """The set_search_options arguments of generation number GENERATION."""
        return {
            "do_sample": self.temperature > 0,
            "temperature": self.temperature,
            "top_k": self.k,
            "top_p": self.p,
            "random_seed": -1 if self.seed is None else (self.seed + generation) % SEED_RANGE,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "logit_bias": self.logit_bias,
            "max_length": max_length,
        }


CHAT_DEFAULTS = Options()
GENERATE_DEFAULTS = dataclasses.replace(CHAT_DEFAULTS, temperature=0.75, truncate="END")
OPTION_NAMES = tuple(field.name for field in dataclasses.fields(Options))


def resolve(given: dict, defaults: Options) -> Options:
    """DEFAULTS with the options GIVEN (a name -> value dict; None means "not given") checked and applied."""
    unknown = sorted(set(given) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"unknown option {unknown[0]!r}; the options are {', '.join(OPTION_NAMES)}")
    return dataclasses.replace(defaults, **{name: CHECKS[name](name, value)
                                            for name, value in given.items() if value is not None})


def _integer(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {'...' if high is None else high}], got {value}")
    return int(value)


def _real(name: str, value, low: float, high: float | None = None, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or (high is not None and value > high):
        interval = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high}]'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return value


def _sequences(name: str, value) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list of strings, got {value!r}")
    if not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"{name} must hold non-empty strings, got {value!r}")
    return tuple(value)


def _truncate(name: str, value) -> str:
    if value not in TRUNCATE_MODES:
        raise ValueError(f"{name} must be one of {', '.join(TRUNCATE_MODES)}, got {value!r}")
    return value


CHECKS = {
    "max_tokens": lambda name, value: _integer(name, value, 1),
    "temperature": lambda name, value: _real(name, value, 0.0),
    "k": lambda name, value: _integer(name, value, 0),
    "p": lambda name, value: _real(name, value, 0.0, 1.0, low_open=True),
    "seed": lambda name, value: _integer(name, value, 0, SEED_RANGE - 1),
    "frequency_penalty": lambda name, value: _real(name, value, 0.0),
    "presence_penalty": lambda name, value: _real(name, value, 0.0),
    "stop_sequences": _sequences,
    "end_sequences": _sequences,
    "logit_bias": search_options.coerce_option,  # token ids are checked against the vocabulary later
    "num_generations": lambda name, value: _integer(name, value, 1, MAX_GENERATIONS),
    "truncate": _truncate,
}
