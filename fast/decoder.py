"""The decoder graph on onnxruntime: one InferenceSession per Model, IO binding per generator.

Side by side with gentwin/reference/decoder.py: the same DecoderState interface (run, rewind, reorder,
outputs), the same mask and position rules (gentwin.position_inputs), the same KV layouts. What changes:

- the graph runs in an onnxruntime InferenceSession, with the session options of genai_config.json (and the
  peer's intra-op thread count where they set none) and the execution providers of the Config, as the peer
  creates its session;
- inputs and outputs are bound once per run through IO binding, and the KV cache, the attention mask and
  the logits live in buffers allocated once per generator (fast/kv_cache.py, MaskBuffer) that onnxruntime
  reads and writes in place;
- with the CUDA provider those buffers are on the GPU (fast/device.py), and so are the logits the search
  reads (fast/search.py): only candidates' scores and the chosen tokens come to the host.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from gentwin import devices, model_check, position_inputs
from gentwin import logging_options as run_log
from gentwin.config import ConfigError
from gentwin.decoder_state import CachedState, layer_caches
from gentwin.errors import GentwinError
from gentwin.fast.device import Device
from gentwin.fast.kv_cache import layer_cache
from gentwin.threads import peer_intra_op_threads

# The peer's provider names (Config.append_provider) and onnxruntime's.
PROVIDERS = {"cpu": "CPUExecutionProvider", "rocm": "ROCMExecutionProvider", **devices.DEVICE_PROVIDERS}

# genai_config.json's decoder.session_options that map onto onnxruntime.SessionOptions attributes.
SESSION_ATTRIBUTES = {
    "intra_op_num_threads": "intra_op_num_threads",
    "inter_op_num_threads": "inter_op_num_threads",
    "enable_cpu_mem_arena": "enable_cpu_mem_arena",
    "enable_mem_pattern": "enable_mem_pattern",
    "log_id": "logid",
    "log_severity_level": "log_severity_level",
}
# Options the peer accepts that change nothing for a CPU or CUDA session built here.
SESSION_OPTIONS_WITHOUT_EFFECT = {"provider_options", "disable_cpu_ep_fallback", "disable_quant_qdq",
                                  "enable_quant_qdq_cleanup", "ep_context_enable", "ep_context_embed_mode",
                                  "ep_context_file_path", "use_env_allocators"}
OPTIMIZATION_LEVELS = {
    "ORT_DISABLE_ALL": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "ORT_ENABLE_BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "ORT_ENABLE_EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "ORT_ENABLE_ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# Where onnxruntime looks for the external data of a model given as bytes (it has no folder of its own).
EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"
NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def session_options(options: dict) -> ort.SessionOptions:
    """genai_config.json's session_options as onnxruntime.SessionOptions; unknown keys are an error.

    What the file leaves unset is the peer's: its intra-op thread count (not onnxruntime's default of one
    thread per physical core) and onnxruntime's spinning workers, so gentwin.fast runs the peer's kernels
    thread for thread, idle or busy. Measured on the 2-core machine busy with other work (README, "How
    fast"): two spinning threads, onnxruntime's default there, decoded at about half the speed of one, in
    both engines, as a waiting worker spins on a core that the caller's thread or the other work needs."""
    result = ort.SessionOptions()
    result.intra_op_num_threads = peer_intra_op_threads()
    for key, value in options.items():
        if key in SESSION_ATTRIBUTES:
            setattr(result, SESSION_ATTRIBUTES[key], value)
        elif key == "graph_optimization_level":
            if value not in OPTIMIZATION_LEVELS:
                raise GentwinError(f"session_options.graph_optimization_level {value!r} is not one of "
                                   f"{sorted(OPTIMIZATION_LEVELS)}")
            result.graph_optimization_level = OPTIMIZATION_LEVELS[value]
        elif key == "enable_profiling":
            result.enable_profiling, result.profile_file_prefix = True, str(value)
        elif key == "custom_ops_library":
            result.register_custom_ops_library(value)
        elif key == "config_entries":
            for entry, setting in value.items():
                result.add_session_config_entry(entry, str(setting))
        elif isinstance(value, str) and "." in key:  # e.g. "session.intra_op.allow_spinning", as the peer passes them
            result.add_session_config_entry(key, value)
        elif key not in SESSION_OPTIONS_WITHOUT_EFFECT:
            raise GentwinError(f"genai_config.json: unknown decoder.session_options key {key!r}")
    return result


def execution_providers(provider_config) -> list:
    """The Config's providers in order (with their options), then the CPU one, as onnxruntime takes them."""
    available = ort.get_available_providers()
    chosen = []
    for name in provider_config.providers:
        if name not in PROVIDERS:
            raise GentwinError(f"unknown execution provider {name!r}; gentwin.fast knows {sorted(PROVIDERS)}")
        if PROVIDERS[name] not in available:
            raise GentwinError(f"execution provider {name!r} is not available in this onnxruntime build "
                               f"(available: {', '.join(available)})")
        options = dict(provider_config.provider_options.get(name, {}))
        if name == "cuda":  # the session's GPU and the buffers' must be one: the current GPU unless given
            options.setdefault("device_id", str(devices.get_current_gpu_device_id()))
        chosen.append((PROVIDERS[name], options))
    return chosen + [("CPUExecutionProvider", {})]


class Graph:
    """model.onnx in an InferenceSession, with its input and output types and the device of its buffers."""

    def __init__(self, session: ort.InferenceSession, device: Device, takes_chunks_over_past: bool,
                 prunes_logits: bool, windowed_layers: frozenset[int]):
        self.session, self.device = session, device
        self.takes_chunks_over_past = takes_chunks_over_past  # see position_inputs.takes_chunks_over_past
        self.prunes_logits = prunes_logits                    # see position_inputs.prunes_logits
        self.windowed_layers = windowed_layers                # see model_check.windowed_attention_layers
        self.input_types = {value.name: NUMPY_TYPES[value.type] for value in session.get_inputs()}
        self.input_shapes = {value.name: tuple(value.shape) for value in session.get_inputs()}
        self.output_types = {value.name: NUMPY_TYPES[value.type] for value in session.get_outputs()}
        self.output_shapes = {value.name: tuple(value.shape) for value in session.get_outputs()}


def load_graph(config, provider_config) -> Graph:
    """The decoder in an InferenceSession, once its graph is checked against genai_config.json."""
    proto = model_check.read_graph(config)
    model_check.check_against_config(config, proto)
    chunks = position_inputs.takes_chunks_over_past(proto.graph)
    pruned = position_inputs.prunes_logits(proto.graph, config.decoder.output_names["logits"])
    windowed_layers = model_check.windowed_attention_layers(config.decoder, proto.graph)
    providers = execution_providers(provider_config)
    options = session_options(config.decoder.session_options)
    if not chunks:
        # The builder's half-precision CPU graphs (MultiHeadAttention, its mask subgraph, repeat_kv) declare
        # shapes that onnxruntime's buffer planner trusts, then fails a decode step on ("Shape mismatch
        # attempting to re-use buffer", the peer's failure on them); without reuse they run, to the same bits.
        options.enable_mem_reuse = False
    model = config.model_path
    if config.model_bytes is not None:  # from memory (Config.add_model_data): external data from the folder
        model = bytes(config.model_bytes)                 # onnxruntime takes bytes, not other buffers
        options.add_session_config_entry(EXTERNAL_DATA_FOLDER, os.path.abspath(config.folder))
    try:
        session = ort.InferenceSession(model, options, providers=[name for name, _ in providers],
                                       provider_options=[opts for _, opts in providers])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable or invalid models
        raise ConfigError(f"cannot load {config.model_path} in onnxruntime: {error}") from error
    provider, provider_options = providers[0]
    if provider == PROVIDERS["cuda"]:
        return Graph(session, Device("cuda", int(provider_options["device_id"])), chunks, pruned, windowed_layers)
    return Graph(session, Device("cpu"), chunks, pruned, windowed_layers)


class MaskBuffer(position_inputs.PositionInputs):
    """The shared mask and position rules, with the mask kept in one buffer per generator.

    After a generator's first run every new mask column is ones (gentwin.position_inputs), so the mask
    [R, T] is the front of a buffer [R, max_length] whose other columns hold ones: a step widens the view
    and allocates nothing. The buffer is of the graph's mask type, so binding it converts nothing either.
    """

    def __init__(self, pad_token_id: int, batch_size: int, rows: int, max_length: int, dtype):
        super().__init__(pad_token_id, batch_size)
        self.buffer = np.ones((rows, max_length), dtype)                                # [R, max_length]

    def next(self, input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.mask is None:
            mask, positions = super().next(input_ids)                                   # [R, S], [R, S]
            self._hold(mask)
            return self.mask, positions
        new = input_ids.shape[1]
        self.mask = self.buffer[:, : self.length + new]                                 # [R, T + new]
        positions = position_inputs.next_position_ids(self.last_positions, new)         # [R, new]
        self.last_positions = positions[:, -1]                                          # [R]
        return self.mask, positions

    def restore(self, snapshot: tuple) -> None:
        super().restore(snapshot)
        if self.mask is not None:
            self._hold(self.mask)

    def _hold(self, mask: np.ndarray) -> None:
        """Make MASK [R, T] the front of the buffer, ones after it."""
        self.buffer[:, : mask.shape[1]] = mask
        self.buffer[:, mask.shape[1] :] = 1
        self.mask = self.buffer[:, : mask.shape[1]]                                     # [R, T]


class DecoderState(CachedState):
    """One generator's model inputs, IO binding and per-layer caches; `run` feeds new tokens and returns their
    logits."""

    def __init__(self, graph: Graph, config, batch_size: int, num_beams: int, max_length: int, share_buffer: bool):
        super().__init__(graph, config, batch_size, num_beams, share_buffer)
        self.device, self.rows = graph.device, batch_size * num_beams
        if type(self.positions) is position_inputs.PositionInputs:  # not the multimodal rules' [3, R, S] positions
            mask_type = graph.input_types.get(self.position_input_names[2], np.int64)
            self.positions = MaskBuffer(config.pad_token_id, batch_size, self.rows, max_length, mask_type)
        self.logits_name = config.decoder.output_names["logits"]
        specs = layer_caches(config, graph, self.rows, max_length, share_buffer, self.device.name)
        self.caches = [layer_cache(spec, self.device) for spec in specs]
        self.binding = graph.session.io_binding()
        self.inputs = {}            # the last run's host inputs, by name, for get_input
        self.extra_inputs = {}      # further inputs by name, set by the api: set_model_input and adapters
        self.logits_buffer = None   # flat, grown to the longest run so far
        self.logits = None          # [R, S, V] the last run's logits: a view of logits_buffer
        # Outputs gentwin does not read (hidden_states, ...): onnxruntime allocates them, each run anew, as
        # their shapes follow the run's. Bound first, they lead the binding's outputs.
        read = {self.logits_name, *self.present_names()}
        self.other_outputs = [name for name in graph.output_types if name not in read]

    def _bind_inputs(self, input_ids: np.ndarray) -> dict:
        """Bind input_ids, attention_mask and position_ids (those the graph takes) and the extra inputs; returns
        the arrays bound, by name, which must outlive the run."""
        bound = {}
        for name, value in {**self.position_feeds(input_ids), **self.extra_inputs}.items():
            bound[name] = np.ascontiguousarray(value, dtype=self.graph.input_types.get(name, value.dtype))
            self.device.bind_host_input(self.binding, name, bound[name], name not in self.graph.input_types)
        return bound

    def _bind_logits(self, new_tokens: int) -> None:
        vocab = self.config.vocab_size
        positions = 1 if self.graph.prunes_logits else new_tokens
        shape = (self.rows, positions, vocab)
        if self.logits is not None and self.logits.shape == shape:
            return
        size = self.rows * positions * vocab
        if self.logits_buffer is None or self.logits_buffer.size < size:
            self.logits_buffer = self.device.zeros(size, self.graph.output_types[self.logits_name])
        self.logits = self.logits_buffer[:size].reshape(shape)                             # [R, S, V]
        self.device.bind_output(self.binding, self.logits_name, self.logits)

    def run(self, input_ids: np.ndarray) -> np.ndarray:
        """Run the decoder on INPUT_IDS [R, S]; return the logits at each row's last real token, [R, V], where
        the graph wrote them (on the GPU under CUDA: the search reads them there)."""
        new_tokens = input_ids.shape[1]
        self.inputs = self._bind_inputs(input_ids)
        for name in self.other_outputs:
            self.binding.bind_output(name, self.device.name, self.device.device_id)
        for cache in self.caches:
            cache.bind(self.binding, new_tokens)
        self._bind_logits(new_tokens)
        if run_log.wanted("model_input_values"):
            self.log_inputs(self._logged_inputs())
        self.graph.session.run_with_iobinding(self.binding)
        for cache in self.caches:
            cache.advance(new_tokens)
        if self.logs_outputs():
            self.log_outputs(self.outputs)
        return position_inputs.logits_at_last_tokens(self.logits, input_ids, self.config.pad_token_id,
                                                     self.device.to_device)                        # [R, V]

    def _logged_inputs(self) -> dict:
        """What the next run is fed, by name, in the peer's order: input_ids, position_ids, attention_mask, the
        pasts (the views bound), then the extra inputs."""
        positions = {name: self.inputs[name] for name in self.position_input_names if name in self.inputs}
        pasts = {name: value for cache in self.caches for name, value in cache.pasts().items()}
        return {**positions, **pasts, **self.inputs}

    @property
    def outputs(self) -> dict:
        """The last run's outputs by name, on the host (for get_output); none before a run."""
        if self.logits is None:
            return {}
        outputs = {self.logits_name: self.logits}
        for cache in self.caches:
            outputs.update(cache.presents())
        if self.other_outputs:  # bound first, so they lead the binding's outputs
            values = self.binding.get_outputs()[: len(self.other_outputs)]
            outputs.update((name, value.numpy()) for name, value in zip(self.other_outputs, values))
        return {name: devices.to_host(value) for name, value in outputs.items()}

    def forget_last_run(self) -> None:
        self.inputs, self.logits = {}, None
