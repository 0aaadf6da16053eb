"""The options of a chat or generate call: Cohere's names, checked, and mapped onto gentwin's search options.

| option | meaning | search option |
|---|---|---|
| `max_tokens` | most tokens to generate, below the context length (default: until EOS or the context is full) | - |
| `temperature` | 0 is greedy; above 0 samples; at most 5 (Cohere Generate's maximum) | `do_sample`, `temperature` |
| `k` | sample among the k likeliest tokens; 0 turns it off; at most the vocabulary's size | `top_k` |
| `p` | then among the likeliest tokens of total probability p, in (0, 1] | `top_p` |
| `seed` | seed of the sampling, in [0, 2**31); none: a fresh one every call | `random_seed` |
| `frequency_penalty`, `presence_penalty` | `logit -= penalty * count` / `-= penalty`, over the reply; <= 1000 | same |
| `logit_bias` | `{token_id: bias}` added to the logits, each bias in [-1000, 1000] | same name |
| `stop_sequences`, `end_sequences` | up to 5 strings (512 characters each) that end the text (gentwin.chat.stops) | - |
| `num_generations` | 1 to 5 replies from one prefill | - |
| `truncate` | `NONE`, `START` or `END`: what to do with a prompt longer than the context allows | - |

Defaults are Cohere's, which differ between its two APIs: chat samples at temperature 0.3 and does not
truncate; generate samples at 0.75 and truncates the END. Both default to k 0 and p 0.75.

The bounds refuse what can only be a mistake, before it costs anything: above 5 (Cohere Generate's maximum) a
temperature flattens the distribution to all but uniform, and a penalty or bias of 1000 outweighs any logit a
model produces (so 1000 already bans a token, and more adds nothing); the stop matcher's work per token grows
with the sequences' count and the square of their length. The Client checks max_tokens against the context.

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
MAX_TEMPERATURE = 5.0
MAX_LOGIT_SHIFT = 1000.0  # the largest penalty or bias: already more than any logit
MAX_SEQUENCES = 5  # stop or end sequences: Cohere's limit on stop_sequences
MAX_SEQUENCE_CHARACTERS = 512


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
        raise TypeError(f"{name} must be a list of strings, got {type(value).__name__}")
    if len(value) > MAX_SEQUENCES:
        raise ValueError(f"{name} holds {len(value)} sequences; at most {MAX_SEQUENCES} are allowed")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not 0 < len(item) <= MAX_SEQUENCE_CHARACTERS:
            got = f"{len(item)} characters" if isinstance(item, str) else type(item).__name__
            raise ValueError(f"{name} must hold non-empty strings of at most {MAX_SEQUENCE_CHARACTERS} characters; "
                             f"{name}[{index}] is {got}")
    return tuple(value)


def _logit_bias(name: str, value) -> dict:
    bias = search_options.coerce_option(name, value)  # token ids are checked against the vocabulary later
    outside = [token for token, amount in bias.items() if abs(amount) > MAX_LOGIT_SHIFT]
    if outside:
        raise ValueError(f"{name}[{outside[0]}] must be in [-{MAX_LOGIT_SHIFT}, {MAX_LOGIT_SHIFT}], "
                         f"got {bias[outside[0]]}")
    return bias


def _truncate(name: str, value) -> str:
    if value not in TRUNCATE_MODES:
        raise ValueError(f"{name} must be one of {', '.join(TRUNCATE_MODES)}, got {value!r}")
    return value


CHECKS = {
    "max_tokens": lambda name, value: _integer(name, value, 1),
    "temperature": lambda name, value: _real(name, value, 0.0, MAX_TEMPERATURE),
    "k": lambda name, value: _integer(name, value, 0),
    "p": lambda name, value: _real(name, value, 0.0, 1.0, low_open=True),
    "seed": lambda name, value: _integer(name, value, 0, SEED_RANGE - 1),
    "frequency_penalty": lambda name, value: _real(name, value, 0.0, MAX_LOGIT_SHIFT),
    "presence_penalty": lambda name, value: _real(name, value, 0.0, MAX_LOGIT_SHIFT),
    "stop_sequences": _sequences,
    "end_sequences": _sequences,
    "logit_bias": _logit_bias,
    "num_generations": lambda name, value: _integer(name, value, 1, MAX_GENERATIONS),
    "truncate": _truncate,
}
