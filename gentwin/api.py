"""onnxruntime-genai 0.18's Python API, shared by both engines.

An engine (gentwin.reference, gentwin.fast) subclasses `Model` and names three things: how to load the
decoder graph, the per-generator decoder state (KV cache and model inputs), and the search that picks
tokens. Everything else (the generate loop, sequences, chat continuation, rewind, errors) lives here once,
so both engines behave the same by construction.

The loop follows the peer: `append_tokens` runs the model at once; `generate_next_token` first runs the
model on the previous step's tokens if their logits are not computed yet, then picks the next tokens.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from gentwin import search_options
from gentwin.config import GenaiConfig, load_config
from gentwin.errors import GentwinError
from gentwin.sequences import Sequences


class Config:
    """A model folder's configuration plus the execution providers asked for (onnxruntime_genai.Config)."""

    def __init__(self, path: str | os.PathLike):
        self.genai = load_config(path)
        self.providers: list[str] = []
        self.provider_options: dict[str, dict[str, str]] = {}

    def clear_providers(self) -> None:
        self.providers.clear()

    def append_provider(self, provider: str) -> None:
        if provider not in self.providers:
            self.providers.append(provider)
        self.provider_options.setdefault(provider, {})

    def set_provider_option(self, provider: str, key: str, value: str) -> None:
        self.append_provider(provider)
        self.provider_options[provider][key] = str(value)


class Model:
    """A loaded model folder. Engines subclass it and set the three engine hooks below."""

    load_graph = None     # (GenaiConfig, Config) -> graph shared by all generators of this model
    DecoderState = None   # (graph, GenaiConfig, batch_size, num_beams, max_length, share_buffer) -> per-generator state
    Search = None         # (options, GenaiConfig) -> advances the sequences by one token chosen from logits

    def __init__(self, config_or_path):
        self._config = config_or_path if isinstance(config_or_path, Config) else Config(config_or_path)
        self.config: GenaiConfig = self._config.genai
        self.graph = type(self).load_graph(self.config, self._config)

    @property
    def type(self) -> str:
        return self.config.model_type

    @property
    def device_type(self) -> str:
        return "cpu"


class GeneratorParams:
    """Search options for the generators made from it (onnxruntime_genai.GeneratorParams)."""

    def __init__(self, model: Model):
        self.model = model
        self.options = {name: search_options.coerce_option(name, value)
                        for name, value in dict(search_options.SEARCH_DEFAULTS, **model.config.search).items()}
        self.model_inputs: dict[str, np.ndarray] = {}
        self._deprecated_input_ids = None

    def set_search_options(self, **options) -> None:
        coerced = {name: search_options.coerce_option(name, value) for name, value in options.items()}
        self.options.update(coerced)

    def get_search_options(self) -> dict:
        return search_options.as_peer_dict(self.options)

    def set_model_input(self, name: str, value) -> None:
        self.model_inputs[name] = np.asarray(value)

    @property
    def input_ids(self):
        return self._deprecated_input_ids

    @input_ids.setter
    def input_ids(self, value) -> None:
        warnings.warn("GeneratorParams.input_ids was removed in onnxruntime-genai 0.6.0: create the Generator, "
                      "then call generator.append_tokens(input_ids)", DeprecationWarning, stacklevel=2)
        self._deprecated_input_ids = value


class Generator:
    """Generates tokens one step at a time (onnxruntime_genai.Generator)."""

    def __init__(self, model: Model, params: GeneratorParams):
        config = model.config
        options = dict(params.options)
        search_options.check_for_generator(options, config.context_length, config.vocab_size)
        self.model, self.options = model, options
        self.batch_size = options["batch_size"]
        rows = self.batch_size * options["num_beams"]
        share_buffer = options["past_present_share_buffer"] and options["num_beams"] == 1
        self.state = model.DecoderState(model.graph, config, self.batch_size, options["num_beams"],
                                        options["max_length"], share_buffer)
        self.search = model.Search(options, config)
        self.sequences = Sequences(rows, options["max_length"], config.eos_token_ids, config.pad_token_id)
        self.logits = None      # [R, V] float32: logits for the next choice, once computed
        self.fed_length = 0     # how many tokens of the sequences the KV cache holds
        self.rewound = False    # rewind_to dropped the logits of the last kept token
        self.next_tokens = np.zeros(rows, dtype=np.int32)  # [R] the last tokens appended or chosen
        if params.input_ids is not None:
            self.append_tokens(params.input_ids)

    # -- appending and generating -----------------------------------------------------------------------

    def append_tokens(self, tokens) -> None:
        tokens = self._check_tokens(tokens)                                      # [R, S]
        if self.sequences.length and self.batch_size > 1:
            raise GentwinError("append_tokens can only be called once for batch_size > 1; call rewind_to(0) first")
        if self.sequences.length and self.options["num_beams"] > 1:
            raise GentwinError("append_tokens can only be called once with beam search (num_beams > 1)")
        if self.sequences.length + tokens.shape[1] > self.sequences.max_length:
            raise GentwinError(f"appending {tokens.shape[1]} tokens to a sequence of length {self.sequences.length} "
                               f"exceeds max_length ({self.sequences.max_length})")
        if self.fed_length < self.sequences.length:
            # The last generated token has not been through the model yet. The peer skips it here and leaves
            # a hole in its KV cache (see README, "Differences"); gentwin runs it first.
            self._compute_logits()
        self.sequences.append_prompt(tokens)
        self.logits = self.state.run(tokens)                                     # [R, V]
        self.fed_length = self.sequences.length
        self.next_tokens = tokens[:, -1].copy()
        self.rewound = False

    def generate_next_token(self) -> None:
        if self.sequences.length >= self.sequences.max_length:
            raise GentwinError(f"generate_next_token called with the sequence already at max_length "
                               f"({self.sequences.max_length})")
        if self.logits is None and self.sequences.all_finished:
            raise GentwinError("generate_next_token called after every sequence finished with EOS: "
                               "append_tokens to continue, or rewind_to")
        logits = self._compute_logits()
        self.logits = None
        self.next_tokens, row_order = self.search.advance(logits, self.sequences)  # [R], [R] or None
        if row_order is not None:
            self.state.reorder(row_order)

    def _compute_logits(self) -> np.ndarray:
        """The logits of the next choice: run the model on the tokens the KV cache does not hold yet."""
        if self.logits is None:
            length = self.sequences.length
            if length == 0:
                raise GentwinError("no tokens yet: call append_tokens first")
            if self.rewound:
                # The logits of the last kept token went with the positions after it, so that token is run
                # again. (The peer instead re-appends the first dropped token: see README.)
                self.state.rewind(length - 1)
                self.fed_length = length - 1
                self.rewound = False
            if self.fed_length == length:
                raise GentwinError("every sequence finished with EOS: append_tokens to continue, or rewind_to")
            self.logits = self.state.run(self.sequences.tokens[:, self.fed_length : length])  # [R, V]
            self.fed_length = length
        return self.logits

    def is_done(self) -> bool:
        return self.logits is None and self.search.is_done(self.sequences)

    # -- reading and writing state -------------------------------------------------------------------

    def get_next_tokens(self) -> np.ndarray:
        return self.next_tokens.copy()                                              # [R]

    def get_sequence(self, index: int) -> np.ndarray:
        return self.search.sequence(self.sequences, self._check_row(index, self.search.returned_rows(self.options)))

    def token_count(self) -> int:
        return self.sequences.length

    def get_logits(self) -> np.ndarray:
        logits = self._compute_logits()
        return logits[:, None, :].copy()                                          # [R, 1, V]

    def set_logits(self, logits) -> None:
        logits = np.asarray(logits)
        rows, vocab = self.sequences.tokens.shape[0], self.model.config.vocab_size
        if not np.issubdtype(logits.dtype, np.floating):
            raise TypeError(f"set_logits expects float logits, got dtype {logits.dtype}")
        if logits.size != rows * vocab:
            raise GentwinError(f"set_logits expects {rows} x {vocab} = {rows * vocab} values, got shape {logits.shape}")
        self.logits = logits.astype(np.float32).reshape(rows, vocab)
        self.rewound = False

    def get_output(self, name: str) -> np.ndarray:
        outputs = self.state.outputs
        if name not in outputs:
            raise GentwinError(f"no output named {name!r}; the model's outputs are {sorted(outputs)}")
        return outputs[name].copy()

    def rewind_to(self, length: int) -> None:
        current = self.sequences.length
        if not 0 <= length <= current:
            raise GentwinError(f"cannot rewind to length {length}: the sequence has {current} tokens")
        if length == current:
            return
        if self.batch_size > 1 and length != 0:
            raise GentwinError("rewind_to must be called with length 0 when batch_size > 1")
        if self.options["num_beams"] > 1:
            raise GentwinError("rewind_to is not supported with beam search")
        self.sequences.rewind(length)
        if length < self.fed_length:
            self.state.rewind(length)
            self.fed_length = length
        self.logits = None
        self.rewound = length > 0

    def compute_logits(self) -> None:
        warnings.warn("Generator.compute_logits() was removed in onnxruntime-genai 0.6.0: append_tokens runs the "
                      "model, and generate_next_token runs it for each new token; just drop the call",
                      DeprecationWarning, stacklevel=2)
        self._compute_logits()

    # -- input checks ----------------------------------------------------------------------------------

    def _check_tokens(self, tokens) -> np.ndarray:
        array = np.asarray(tokens)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
            raise TypeError(f"tokens must be integers, got dtype {array.dtype}")
        if array.ndim not in (1, 2):
            raise GentwinError(f"tokens must be a 1-D or 2-D array, got {array.ndim} dimensions")
        if array.size == 0:
            raise GentwinError("tokens is empty")
        if array.size % self.batch_size:
            raise GentwinError(f"{array.size} tokens cannot be split into batch_size ({self.batch_size}) equal rows")
        vocab = self.model.config.vocab_size
        bad = (array < 0) | (array >= vocab)
        if bad.any():
            raise GentwinError(f"token id {int(array[bad].flat[0])} is outside the vocabulary [0, {vocab})")
        rows = array.reshape(self.batch_size, -1).astype(np.int32)              # [B, S]
        return np.repeat(rows, self.options["num_beams"], axis=0)                # [B * beams, S]

    @staticmethod
    def _check_row(index: int, rows: int) -> int:
        if not 0 <= index < rows:
            raise IndexError(f"sequence index {index} is out of range [0, {rows})")
        return index
