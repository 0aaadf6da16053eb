"""onnxruntime-genai 0.18's Python API, shared by both engines.

An engine (gentwin.reference, gentwin.fast) subclasses `Model` and names three things: how to load the
decoder graph, the per-generator decoder state (KV cache and model inputs), and the search that picks
tokens. Everything else (the generate loop, sequences, chat continuation, rewind, errors) lives here once,
so both engines behave the same by construction.

The loop follows the peer: `append_tokens` runs the model at once; `generate_next_token` first runs the
model on the previous step's tokens if their logits are not computed yet, then picks the next tokens.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

from gentwin import draft, model_check, position_inputs, search_options, speculative
from gentwin import logging_options as run_log
from gentwin.adapters import Adapters
from gentwin.config import ConfigError, GenaiConfig, draft_config, load_config
from gentwin.devices import to_host
from gentwin.errors import (ArgumentIndexError, ArgumentTypeError, ArgumentValueError, GentwinError, array, integer,
                            shown, text)
from gentwin.graph_inputs import ExtraInputs, input_specs
from gentwin.sequences import Sequences, check_vocabulary_range, right_padded
from gentwin.tensors import NamedTensors


class Config:
    """A model folder's configuration plus the execution providers asked for (onnxruntime_genai.Config).

    It starts with the providers genai_config.json lists under session_options.provider_options, as the
    peer's does. gentwin.reference accepts and ignores providers (it runs numpy on the CPU); gentwin.fast
    maps them to onnxruntime execution providers. As in the peer, clear_providers empties the list but
    keeps the options set so far, which apply again if the provider is appended again.

    add_model_data gives a model file's bytes, which a Model made from this Config then reads instead of the
    file (the file need not exist); its external data, if any, is still read from the model folder.
    """

    def __init__(self, path: str | os.PathLike):
        if not isinstance(path, (str, os.PathLike)):
            raise ArgumentTypeError(f"Config: the model folder must be a str or os.PathLike path, got {shown(path)}")
        self.genai = load_config(path, model_file_required=False)  # it may come from memory: checked at Model()
        self.model_data: dict[str, memoryview] = {}  # file name -> bytes given with add_model_data
        self.providers: list[str] = []
        self.provider_options: dict[str, dict[str, str]] = {}
        for provider, options in _configured_providers(self.genai.decoder.session_options):
            self.append_provider(provider)
            for key, value in options.items():
                self.set_provider_option(provider, key, str(value))

    def clear_providers(self) -> None:
        self.providers.clear()

    def append_provider(self, provider: str) -> None:
        text(provider, "append_provider: provider")
        if provider not in self.providers:
            self.providers.append(provider)
        self.provider_options.setdefault(provider, {})

    def set_provider_option(self, provider: str, key: str, value: str) -> None:
        for name, argument in (("provider", provider), ("key", key), ("value", value)):
            text(argument, f"set_provider_option: {name}")
        self.append_provider(provider)
        self.provider_options[provider][key] = value

    def add_model_data(self, filename: str, data: bytes | bytearray | memoryview) -> None:
        """Load model file FILENAME (as genai_config.json names it) from DATA instead of the model folder.

        DATA is bytes or any 1-D buffer of bytes (bytearray, memoryview, a uint8 numpy array). As in the
        peer, it is read when a Model is made, not copied here; unlike the peer, this Config keeps DATA
        alive until remove_model_data, so dropping one's own reference to it is safe."""
        text(filename, "add_model_data: filename")
        try:
            view = memoryview(data)
        except TypeError:
            raise ArgumentTypeError(f"add_model_data: Unsupported input type. Expected bytes or buffer. "
                                    f"(got {shown(data)})") from None
        if view.format not in ("B", "c") or view.ndim != 1:
            raise ArgumentTypeError(f"add_model_data: Expected a 1D buffer of uint8_t, got format {view.format!r} "
                                    f"with {view.ndim} dimension(s)")
        if not view.c_contiguous:
            raise ArgumentValueError("add_model_data: the buffer is not contiguous (a strided view); pass its bytes")
        if view.nbytes == 0:
            raise ArgumentValueError("add_model_data: Expected a valid model data pointer and length. "
                                     "Received nullptr or zero length.")
        if filename in self.model_data:
            raise GentwinError(f"Model data for '{filename}' was already added previously. "
                               "If you want to replace it, please remove it first.")
        self.model_data[filename] = view

    def remove_model_data(self, filename: str) -> None:
        """Forget the bytes add_model_data gave for FILENAME; Models already made keep what they loaded."""
        text(filename, "remove_model_data: filename")
        if filename not in self.model_data:
            raise GentwinError(f"Model data for '{filename}' was not found.")
        del self.model_data[filename]

    def model_config(self) -> GenaiConfig:
        """The configuration a Model made now reads: with the decoder's bytes where add_model_data gave them."""
        return dataclasses.replace(self.genai, model_bytes=self.model_data.get(self.genai.decoder.filename))


def _configured_providers(session_options: dict) -> list[tuple[str, dict]]:
    """(provider, options) pairs of genai_config.json's provider_options: [{"cuda": {"key": "value"}}, ...]."""
    entries = session_options.get("provider_options", [])
    if not isinstance(entries, list) or not all(
            isinstance(entry, dict) and all(isinstance(options, dict) for options in entry.values())
            for entry in entries):
        raise ConfigError("genai_config.json: 'model.decoder.session_options.provider_options' must be a list "
                          "of {provider: {option: value}}")
    return [(provider, options) for entry in entries for provider, options in entry.items()]


class Model:
    """A loaded model folder. Engines subclass it and set the three engine hooks below."""

    load_graph = None     # (GenaiConfig, Config) -> graph shared by all generators of this model
    DecoderState = None   # (graph, GenaiConfig, batch_size, num_beams, max_length, share_buffer) -> per-generator state
    #                       with run, rewind, reorder, outputs, and snapshot/restore (see Generator.snapshot),
    #                       run and rewind preceded by their checks (check_run, check_rewind: see
    #                       gentwin/decoder_state.py); run feeds the dict `extra_inputs` the api sets, and
    #                       keeps what it fed in `inputs`
    Search = None         # (options, GenaiConfig) -> advances the sequences by one token chosen from logits
    Speculation = None    # (speculative options, generator) -> one generator's drafts, n-gram or from the
    #                       draft model (gentwin/reference/speculative.py)
    load_encoder = None   # (GenaiConfig, Config) -> an encoder-decoder model's encoder graph
    EncoderDecoderState = None  # (encoder graph, decoder graph, GenaiConfig, rows) -> its per-generator state,
    #                             with DecoderState's interface (gentwin/encoder_decoder.py)

    def __init__(self, config_or_path):
        self._config = config_or_path if isinstance(config_or_path, Config) else Config(config_or_path)
        self.config: GenaiConfig = self._config.model_config()
        draft.check_draft_config(self.config)  # the peer's checks of model.draft, in its words
        self.speculative_options = speculative.configured(self.config)
        self.graph = type(self).load_graph(self.config, self._config)
        self.encoder_graph = self.config.encoder and type(self).load_encoder(self.config, self._config)
        target = model_check.read_graph(self.config)
        self.prunes_logits = position_inputs.prunes_logits(target.graph, self.config.decoder.output_names["logits"])
        draft.check_draft_graph(self.config, target)
        self.draft_config = draft_config(self.config)  # model.draft: draft-model speculative decoding
        if self.draft_config:
            speculative.check_draft_model(self.config, self.draft_config)
        self.draft_graph = self.draft_config and type(self).load_graph(self.draft_config, self._config)
        self.extra_inputs = ExtraInputs(input_specs(target, self.config.model_path), self.config)

    def generate(self, params: GeneratorParams) -> np.ndarray:
        """0.5-era: run a Generator on params.input_ids to the end; the sequences, one row each, int32.

        Rows are batch_size * num_return_sequences; where beam search returns sequences of different
        lengths, the shorter ones are padded on the right with pad_token_id.
        """
        _check_instance(params, GeneratorParams, "Model.generate", "params")
        warnings.warn("Model.generate was removed in onnxruntime-genai 0.6.0: create a Generator, append_tokens, "
                      "and call generate_next_token until is_done()", DeprecationWarning, stacklevel=2)
        if params.input_ids is None:
            raise GentwinError("Model.generate needs the prompt in params.input_ids")
        generator = Generator(self, params)
        while not generator.is_done():
            generator.generate_next_token()
        rows = [generator.get_sequence(i) for i in range(generator.search.returned_rows(generator.options))]
        return right_padded(rows, self.config.pad_token_id)

    @property
    def type(self) -> str:
        return self.config.model_type

    @property
    def device_type(self) -> str:
        """Where the model runs, spelled as the peer spells it ("CPU", "CUDA", ...)."""
        return "CPU"


class GeneratorParams:
    """Search options for the generators made from it (onnxruntime_genai.GeneratorParams)."""

    def __init__(self, model: Model):
        _check_instance(model, Model, "GeneratorParams", "model")
        self.model = model
        self.options = search_options.resolved(model.config.search)
        self.model_inputs: dict[str, np.ndarray] = {}
        self.speculative_options = dict(model.speculative_options)
        self._deprecated_input_ids = None

    def set_search_options(self, **options) -> None:
        coerced = {name: search_options.coerce_option(name, value) for name, value in options.items()}
        self.options.update(coerced)

    def get_search_options(self) -> dict:
        return search_options.as_peer_dict(self.options)

    def set_speculative_options(self, **options) -> None:
        """ngram_size, max_draft_tokens, ngram_chained_lookup, min_adaptive_k, cooldown (gentwin.speculative)."""
        coerced = {name: speculative.coerce_option(name, value) for name, value in options.items()}
        self.speculative_options.update(coerced)

    def get_speculative_options(self) -> dict:
        return speculative.as_peer_dict(self.speculative_options)

    def set_model_input(self, name: str, value) -> None:
        """0.5-era: an extra model input for the generators made from these params (see Generator.set_model_input)."""
        self.model_inputs[name] = self.model.extra_inputs.check(name, value, "GeneratorParams.set_model_input")

    # 0.5-era members: the model's special tokens and vocabulary size, read-only.
    @property
    def pad_token_id(self) -> int:
        return self.model.config.pad_token_id

    @property
    def eos_token_id(self) -> int:
        """The first EOS token, as the peer's was when genai_config.json lists several."""
        return self.model.config.eos_token_ids[0]

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    def try_graph_capture_with_max_batch_size(self, max_batch_size: int) -> None:
        """0.5-era: accepted, and does nothing. Graph capture (CUDA graphs, DirectML) needs a GPU provider;
        gentwin.reference has none, and gentwin.fast does not capture graphs."""
        if integer(max_batch_size, "max_batch_size") < 0:
            raise ArgumentValueError(f"max_batch_size must be 0 or more, got {max_batch_size}")

    def generator_options(self) -> dict:
        """The options a Generator starts from. 0.5-style input_ids [B, S] set batch_size to B, as the peer's did."""
        options = dict(self.options)
        if self._deprecated_input_ids is not None:
            options["batch_size"] = np.atleast_2d(self._deprecated_input_ids).shape[0]
        return options

    @property
    def input_ids(self):
        return self._deprecated_input_ids

    @input_ids.setter
    def input_ids(self, value) -> None:
        warnings.warn("GeneratorParams.input_ids was removed in onnxruntime-genai 0.6.0: create the Generator, "
                      "then call generator.append_tokens(input_ids)", DeprecationWarning, stacklevel=2)
        self._deprecated_input_ids = token_array(value, "GeneratorParams.input_ids")


class GeneratorSnapshot:
    """gentwin extension: a batch-1 Generator's state, frozen, to restore into any number of Generators.

    Made by Generator.snapshot, read by Generator.restore; opaque to everyone else but for `tokens`. It holds
    the token sequence (and where the tokens generated since the last append begin, which the penalties
    read), the decoder state (DecoderState.snapshot: KV cache, attention mask, positions) and the pending
    logits. Every array in it is a copy and restore copies again, so a snapshot never changes once made,
    and can be restored from several threads at once.
    """

    def __init__(self, generator: Generator):
        sequences = generator.sequences
        self.model = generator.model
        self.tokens = sequences.current()[0].copy()                                   # [length]
        self.tokens.flags.writeable = False
        self.prompt_length, self.finished = sequences.prompt_length, bool(sequences.finished[0])
        self.fed_length, self.rewound = generator.fed_length, generator.rewound
        self.next_tokens = generator.next_tokens.copy()                               # [1]
        self.logits = None if generator.logits is None else generator.logits.copy()  # [1, V]
        self.decoder = generator.state.snapshot()


class Generator:
    """Generates tokens one step at a time (onnxruntime_genai.Generator)."""

    def __init__(self, model: Model, params: GeneratorParams):
        _check_instance(model, Model, "Generator", "model")
        _check_instance(params, GeneratorParams, "Generator", "params")
        if params.model is not model:
            raise ArgumentValueError("Generator: params were made for another Model (GeneratorParams(model) "
                                     "reads that model's search defaults and inputs)")
        config = model.config
        options = params.generator_options()
        search_options.check_for_generator(options, config.context_length, config.vocab_size)
        speculative.check_for_generator(params.speculative_options, options, config, bool(model.draft_config),
                                        model.prunes_logits)
        self.model, self.options = model, options
        self.batch_size = options["batch_size"]
        rows = self.batch_size * options["num_beams"]
        share_buffer = options["past_present_share_buffer"] and options["num_beams"] == 1
        if options["past_present_share_buffer"] and not share_buffer and run_log.wanted("warning"):
            run_log.write("warning", "past_present_share_buffer search option set to true, but has been disabled "
                                     "due to the current configuration. See https://aka.ms/generate_config for details")
        if config.encoder:
            self.state = model.EncoderDecoderState(model.encoder_graph, model.graph, config, rows)
        else:
            self.state = model.DecoderState(model.graph, config, self.batch_size, options["num_beams"],
                                            options["max_length"], share_buffer)
        self.search = model.Search(options, config)
        self.speculation = None  # n-gram drafting when the params ask for it, or the model's draft model
        if params.speculative_options["ngram_size"] or model.draft_config:
            self.speculation = model.Speculation(params.speculative_options, self)
        self.sequences = Sequences(rows, options["max_length"], config.eos_token_ids)
        self.logits = None      # [R, V] float32: logits for the next choice, once computed
        self.fed_length = 0     # how many tokens of the sequences the KV cache holds
        self.rewound = False    # rewind_to dropped the logits of the last kept token
        self.next_tokens = np.zeros(rows, dtype=np.int32)  # [R] the last tokens appended or chosen
        self.model_inputs = dict(params.model_inputs)  # extra inputs by name, from set_model_input
        self.adapters: Adapters | None = None          # the one container set_active_adapter may use
        self.adapter_parameters: list[dict] = []       # the active adapters' parameters, in activation order
        self._update_extra_inputs()
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
        self.model.extra_inputs.check_runnable(set(self.model_inputs).union(*self.adapter_parameters))
        self.state.check_run(tokens)
        self._interrupt_speculation()
        if self.fed_length < self.sequences.length:
            # The last generated token has not been through the model yet. The peer skips it here and leaves
            # a hole in its KV cache (see README, "Differences"); gentwin runs it first.
            self._compute_logits()
        self.sequences.append_prompt(tokens)
        if run_log.wanted("append_next_tokens"):
            self._log_prompt(tokens)
        self.logits = self._run(tokens)                                          # [R, V]
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
        if self.speculation:
            self.speculation.before_choice(self)  # may verify drafts and give the logits of a round's row
        logits = self._compute_logits()
        self.logits = None
        if run_log.wanted("generate_next_token"):
            self._log_search_step()
        self.next_tokens, row_order = self.search.advance(logits, self.sequences)  # [R], [R] or None
        if row_order is not None:
            self.state.reorder(row_order)
        if run_log.wanted("append_next_tokens"):
            run_log.write_tokens("append_next_tokens", self.next_tokens)
        if self.sequences.length == self.sequences.max_length and run_log.wanted("hit_max_length"):
            search = "beam" if self.options["num_beams"] > 1 else "greedy"
            run_log.write("hit_max_length", f"{search} {self.model.device_type.lower()} hit")
        if self.speculation:
            self.speculation.after_choice(self)   # a draft token accepted, or the round rolled back

    def _log_prompt(self, tokens: np.ndarray) -> None:
        """The peer's greedy search appends a prompt one position at a time, each row's token of it; its beam
        search appends the prompt once, before the rows are copied to the beams."""
        beams = self.options["num_beams"]
        if beams > 1:
            run_log.write_tokens("append_next_tokens", tokens[::beams].reshape(-1))       # [B * S]
        else:
            for column in tokens.T:                                                        # [R] each
                run_log.write_tokens("append_next_tokens", column)

    def _log_search_step(self) -> None:
        options = self.options
        run_log.write("generate_next_token", "".join(
            f"{run_log.green(name + ': ')}{run_log.number(options[name])} "
            for name in ("do_sample", "top_k", "top_p", "temperature"))
            + f"{run_log.cyan('sequence length: ')}{self.sequences.length}")

    def _compute_logits(self) -> np.ndarray:
        """The logits of the next choice: run the model on the tokens the KV cache does not hold yet."""
        if self.logits is None:
            tokens = self.tokens_to_feed()                                           # [R, S]
            if tokens.shape[1] == 0:
                raise GentwinError("every sequence finished with EOS: append_tokens to continue, or rewind_to")
            self.logits = self._run(tokens)                                          # [R, V]
            self.fed_length = self.sequences.length
        return self.logits

    def tokens_to_feed(self) -> np.ndarray:
        """The tokens of the sequences the KV cache does not hold, [R, S], to run for the next choice's logits."""
        length = self.sequences.length
        if length == 0:
            raise GentwinError("no tokens yet: call append_tokens first")
        if self.rewound:
            # The logits of the last kept token went with the positions after it, so that token is run
            # again. (The peer instead re-appends the first dropped token: see README.)
            self.state.rewind(length - 1)
            self.fed_length = length - 1
            self.rewound = False
        return self.sequences.tokens[:, self.fed_length : length]

    def _run(self, tokens: np.ndarray) -> np.ndarray:
        """Run the model on TOKENS [R, S] after the fed_length tokens it holds; the logits after the last, [R, V].

        A graph that cannot take several tokens over a past (position_inputs.takes_chunks_over_past) gets
        them one at a time; get_output then holds the last token's outputs only.
        """
        if self.fed_length == 0 or tokens.shape[1] == 1 or self.model.graph.takes_chunks_over_past:
            logits = self.state.run(tokens)                                       # [R, V]
        else:
            for column in range(tokens.shape[1]):
                logits = self.state.run(tokens[:, column : column + 1])           # [R, V]
        if run_log.wanted("model_logits"):
            run_log.write_values("model_logits", to_host(logits))
            run_log.write_line("")
        return logits

    def is_done(self) -> bool:
        return self.logits is None and self.search.is_done(self.sequences)

    # -- reading and writing state -------------------------------------------------------------------

    def get_next_tokens(self) -> np.ndarray:
        return self.next_tokens.copy()                                              # [R]

    def get_sequence(self, index: int) -> np.ndarray:
        index = integer(index, "get_sequence: index")
        rows = self.search.returned_rows(self.options)
        if not 0 <= index < rows:
            raise ArgumentIndexError(f"get_sequence: sequence index {index} is out of range [0, {rows})")
        return self.search.sequence(self.sequences, index)

    def token_count(self) -> int:
        return self.sequences.length

    def get_logits(self) -> np.ndarray:
        logits = to_host(self._compute_logits())                                  # [R, V]
        return logits[:, None, :].copy()                                          # [R, 1, V]

    def set_logits(self, logits) -> None:
        """Replace the logits of the next choice. They must have been computed (by append_tokens, or by
        get_logits after generate_next_token or rewind_to), as the peer requires; setting them again before
        the choice replaces them again."""
        if self.logits is None:
            raise GentwinError("set_logits: logits are not computed yet; call append_tokens first, or get_logits "
                               "after generate_next_token or rewind_to")
        logits = array(logits, "set_logits: logits")
        rows, vocab = self.sequences.tokens.shape[0], self.model.config.vocab_size
        if not np.issubdtype(logits.dtype, np.floating):
            raise ArgumentTypeError(f"set_logits: logits must be floats, got dtype {logits.dtype}")
        if logits.size != rows * vocab:
            raise ArgumentValueError(f"set_logits: logits must be {rows} x {vocab} = {rows * vocab} values, "
                                     f"got shape {logits.shape}")
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused next
            values = logits.astype(np.float32).reshape(rows, vocab)                # [R, V]
        unusable = np.flatnonzero(~np.isfinite(values))
        if unusable.size:
            first = unusable[0]
            raise ArgumentValueError(f"set_logits: {unusable.size} logits are NaN, infinite or beyond float32's "
                                     f"range; the first is {logits.flat[first]!r} at flat index {first}")
        self._interrupt_speculation()
        self.logits = values

    def get_input(self, name: str) -> np.ndarray:
        """A copy of the value fed to model input NAME in the last run."""
        text(name, "get_input: name")
        inputs = self.state.inputs
        if name not in inputs:
            fed = f"the last run fed {sorted(inputs)}" if inputs else "the model has not run yet"
            raise GentwinError(f"no input named {name!r} was fed; {fed}")
        return inputs[name].copy()

    def get_output(self, name: str) -> np.ndarray:
        text(name, "get_output: name")
        outputs = self.state.outputs
        if name not in outputs:
            raise GentwinError(f"no output named {name!r}; the model's outputs are {sorted(outputs)}")
        return outputs[name].copy()

    # -- extra model inputs and adapters ----------------------------------------------------------------

    def set_model_input(self, name: str, value) -> None:
        """Feed VALUE to the model's extra input NAME from the next run on (a copy is kept).

        The peer takes these only before the first append_tokens and only for inputs without a default,
        silently ignoring the rest; gentwin takes them at any time (see README, "Differences")."""
        self.model_inputs[name] = self.model.extra_inputs.check(name, value, "set_model_input")
        self._update_extra_inputs()

    def set_inputs(self, named_tensors: NamedTensors) -> None:
        """Refused, as by the peer for every decoder-only model: their inputs come from append_tokens."""
        _check_instance(named_tensors, NamedTensors, "set_inputs", "named_tensors")
        raise GentwinError(f"Please use generator.append_tokens for {self.model.type}. "
                           "set_inputs is not supported for this model type.")

    def set_active_adapter(self, adapters: Adapters, name: str) -> None:
        """Feed the parameters of adapter NAME of ADAPTERS from the next run on (see gentwin.adapters)."""
        _check_instance(adapters, Adapters, "set_active_adapter", "adapters")
        if self.adapters is not None and adapters is not self.adapters:
            raise GentwinError("a Generator can only use the adapters of a single Adapters container")
        parameters = adapters.activate(name, self)
        self.adapters = adapters
        self.adapter_parameters.append(parameters)
        self._update_extra_inputs()

    def _update_extra_inputs(self) -> None:
        """What the decoder state feeds besides its own inputs: the peer's presets, model inputs over them,
        then adapters over those."""
        extra = {**self.model.extra_inputs.presets(), **self.model_inputs}
        for parameters in self.adapter_parameters:
            extra.update(parameters)
        self.state.extra_inputs = extra

    def rewind_to(self, length: int) -> None:
        length = integer(length, "rewind_to: length")
        current = self.sequences.length
        if not 0 <= length <= current:
            raise ArgumentValueError(f"rewind_to: cannot rewind to length {length}: the sequence has {current} tokens")
        if length == current:
            return
        if self.batch_size > 1 and length != 0:
            raise GentwinError("rewind_to must be called with length 0 when batch_size > 1")
        if self.options["num_beams"] > 1:
            raise GentwinError("rewind_to is not supported with beam search")
        self.state.check_rewind(length)
        self._interrupt_speculation(rewound=True)
        if length < self.fed_length:  # the engine's state first: should it fail, the sequences still match it
            self.state.rewind(length)
            self.fed_length = length
        self.sequences.rewind(length)
        self.logits = None
        self.rewound = length > 0

    def snapshot(self) -> GeneratorSnapshot:
        """gentwin extension (not in onnxruntime-genai): a frozen copy of this generator's state.

        `Generator(model, params).restore(snapshot)` puts a new generator exactly where this one is now, so a
        prompt prefilled once serves many generations (gentwin.chat's prefix cache, num_generations). Batch
        size 1 without beam search only.

        The engine's part is the DecoderState hook pair, which must copy, never share:
        - `DecoderState.snapshot()` returns an object holding copies of everything the next run reads that
          earlier runs wrote: the KV cache's valid positions (the first T, T being the positions run so far),
          the attention mask and the positions. Later runs of this state must not change it.
        - `DecoderState.restore(snapshot)` makes this state equal to the one the snapshot was taken from,
          copying the KV positions into its own buffers (which may be longer, max_length being per
          generator), so that its later runs change neither the snapshot nor another state restored from it.
          The last run's outputs (get_output) are not part of a snapshot.
        """
        self._check_single_row("snapshot")
        self._interrupt_speculation()
        return GeneratorSnapshot(self)

    def restore(self, snapshot: GeneratorSnapshot) -> None:
        """gentwin extension: make this generator's state the one SNAPSHOT holds: sequence, KV cache and
        pending logits. Its own search options (seed, temperature, ...) stay, and so does its random
        number generator's state, as in a generator just made; get_output is empty until the next run."""
        _check_instance(snapshot, GeneratorSnapshot, "restore", "snapshot")
        if snapshot.model is not self.model:
            raise GentwinError("restore: the snapshot was taken from a generator of another Model")
        self._check_single_row("restore")
        length = len(snapshot.tokens)
        if length > self.sequences.max_length:
            raise GentwinError(f"restore: the snapshot holds {length} tokens, more than this generator's "
                               f"max_length ({self.sequences.max_length})")
        self._interrupt_speculation(rewound=True)
        self.sequences.rewind(0)
        self.sequences.append_prompt(snapshot.tokens[None, :])
        self.sequences.prompt_length, self.sequences.finished[:] = snapshot.prompt_length, snapshot.finished
        self.state.restore(snapshot.decoder)
        self.fed_length, self.rewound = snapshot.fed_length, snapshot.rewound
        self.next_tokens = snapshot.next_tokens.copy()
        self.logits = None if snapshot.logits is None else snapshot.logits.copy()

    def get_speculative_stats(self) -> dict:
        """What speculative decoding proposed and accepted so far (gentwin.speculative.Stats); zeros without it."""
        if self.speculation is None:
            return speculative.Stats().as_peer_dict(False, 0, speculative.AdaptiveK(0, 0), speculative.Cooldown(False))
        return self.speculation.get_stats()

    def _interrupt_speculation(self, rewound: bool = False) -> None:
        if self.speculation:
            self.speculation.interrupt(self, rewound)

    def _check_single_row(self, what: str) -> None:
        if self.batch_size != 1 or self.options["num_beams"] != 1:
            raise GentwinError(f"{what} needs batch_size 1 and num_beams 1, got batch_size {self.batch_size} "
                               f"and num_beams {self.options['num_beams']}")

    def compute_logits(self) -> None:
        warnings.warn("Generator.compute_logits() was removed in onnxruntime-genai 0.6.0: append_tokens runs the "
                      "model, and generate_next_token runs it for each new token; just drop the call",
                      DeprecationWarning, stacklevel=2)
        self._compute_logits()

    # -- input checks ----------------------------------------------------------------------------------

    def _check_tokens(self, tokens) -> np.ndarray:
        ids = token_array(tokens, "append_tokens: tokens")
        if ids.size % self.batch_size:
            raise ArgumentValueError(f"append_tokens: {ids.size} tokens cannot be split into batch_size "
                                     f"({self.batch_size}) equal rows")
        check_vocabulary_range(ids, self.model.config.vocab_size, "append_tokens: tokens")
        rows = ids.reshape(self.batch_size, -1).astype(np.int32)                # [B, S]
        return np.repeat(rows, self.options["num_beams"], axis=0)                # [B * beams, S]


def token_array(tokens, what: str) -> np.ndarray:
    """TOKENS (a list, an array or a Tensor) as a non-empty 1-D or 2-D integer array."""
    ids = array(tokens, what)
    if ids.size == 0:
        raise ArgumentValueError(f"{what} is empty")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ArgumentTypeError(f"{what} must be integers, got dtype {ids.dtype}")
    if ids.ndim not in (1, 2):
        raise ArgumentValueError(f"{what} must be a 1-D or 2-D array, got {ids.ndim} dimensions")
    return ids


def _check_instance(value, cls: type, method: str, argument: str) -> None:
    if not isinstance(value, cls):
        article = "an" if cls.__name__[0] in "AEIOU" else "a"
        raise ArgumentTypeError(f"{method} takes {article} {cls.__name__} as {argument}, got {shown(value)}")
