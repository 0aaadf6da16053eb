"""What both engines' decoder states share: one cache per layer, chosen from genai_config.json (linear-attention
layers from the graph's inputs, as the peer finds them), and the attention mask and positions, which move with them.

A layer carries one of four kinds of state from one run to the next (gentwin.config's layer kinds):
- a KV cache: past keys and values (`past_key_values.%d.key` / `.value`, or gpt2's combined `past_%d`)
  that the present extends, or with `past_present_share_buffer` one max_length buffer both read and write;
- a windowed KV cache (`decoder.sliding_window`, read by a GroupQueryAttention with sliding_window_cache=1:
  model_check.windowed_attention_layers): one buffer of a few positions more than the window, which the
  attention op fills and evicts from itself;
- a convolution state (lfm2's conv layers, `past.%d.conv`): the last K - 1 inputs of the layer's causal
  convolution, [B, C, K - 1], which the present replaces;
- a recurrent state (Qwen3.5's linear-attention layers): a convolution state as above and the recurrence's
  state [B, H, Dk, Dv] (`past.%d.recurrent`, LinearAttention's memory of every token before), two fixed-shape
  tensors that the presents replace, one LayerCache each.
A decoder without any of these (no layer, or no cache input) feeds only the tokens and their positions.

`LayerCache` describes one layer's tensors and decides what the peer decides about them: how big, whether a
rewind can work. An engine holds each layer's tensors its own way (gentwin/reference/kv_cache.py:
numpy arrays; gentwin/fast/kv_cache.py: preallocated buffers bound to onnxruntime) behind one interface, and
its DecoderState (gentwin/reference/decoder.py, gentwin/fast/decoder.py) subclasses `CachedState`, sets
`caches` from `layer_caches`, feeds `position_feeds` and the caches to the graph its own way, and says in
`forget_last_run` how to drop the last run's inputs and outputs. Its graph has `input_types`: {input name:
numpy dtype} and `input_shapes`: {input name: declared shape}.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gentwin import logging_options as run_log
from gentwin import position_inputs
from gentwin.config import CONV_LAYER, KV_LAYER, RECURRENT_LAYER, WINDOWED_KV_LAYER
from gentwin.devices import to_host
from gentwin.errors import GentwinError

# onnxruntime-genai's slack beyond the window for a windowed cache when cache_slack is 0, by device.
WINDOW_SLACK = {"cpu": 16, "cuda": 0}
FIXED_SHAPE_KINDS = (CONV_LAYER, RECURRENT_LAYER)  # states of one shape, which the present replaces whole


@dataclass(frozen=True)
class LayerCache:
    """One layer's past inputs and present outputs, and what the peer allows with them."""

    layer: int
    kind: str                         # KV_LAYER, WINDOWED_KV_LAYER, CONV_LAYER or RECURRENT_LAYER
    past_names: tuple[str, ...]
    present_names: tuple[str, ...]
    dtype: type
    leading: tuple[int, ...]          # the dimensions before the positions, [(2,) B, H]; a fixed state's whole shape
    trailing: tuple[int, ...]         # after them: [D]; a fixed state has none
    capacity: int | None              # positions of a buffer past and present share; None: the past grows
    max_length: int

    @property
    def rows_axis(self) -> int:
        """The batch-times-beams axis: first, but in gpt2's combined past, which leads with keys and values."""
        return 1 if not self.fixed_shape and len(self.leading) == 3 else 0

    @property
    def fixed_shape(self) -> bool:
        """A state of one shape whatever the positions run (a conv or recurrent state), not a cache of positions."""
        return self.kind in FIXED_SHAPE_KINDS

    def shape_of(self, positions: int) -> tuple[int, ...]:
        """The shape of a past or present holding POSITIONS positions (a fixed state has one shape)."""
        if self.fixed_shape:
            return self.leading                                                      # [B, C, K - 1] or [B, H, Dk, Dv]
        return (*self.leading, positions, *self.trailing)                            # [(2,) B, H, positions, D]

    def held(self, tensor, length: int):
        """The part of TENSOR (a past, LENGTH positions run) that a snapshot keeps: the positions written
        (a windowed buffer holds at most its capacity), or a fixed state whole."""
        if self.fixed_shape:
            return tensor
        return tensor[..., : min(length, tensor.shape[-2]), :]                       # [(2,) B, H, <= length, D]

    def check_rewind(self, length: int, fed: int) -> None:
        """Raise, as the peer does, if this layer cannot go back to LENGTH positions with FED run."""
        if self.kind == CONV_LAYER:
            raise GentwinError(f"rewind_to is not supported on this model: conv layer {self.layer}'s state "
                               f"({self.past_names[0]}) holds the last inputs of its convolution, which depend on "
                               "every token before, and going back would need them all run again "
                               "(onnxruntime-genai refuses it too)")
        if self.kind == RECURRENT_LAYER and length != 0:
            raise GentwinError(f"rewind_to({length}) is not supported on this model: linear-attention layer "
                               f"{self.layer}'s state ({self.past_names[0]}) sums up every token before, and cannot "
                               "be cut back to a shorter sequence; only rewind_to(0) starts again (onnxruntime-genai "
                               "refuses it too: recurrent states cannot be partially rewound)")
        if self.kind == WINDOWED_KV_LAYER and self.capacity < self.max_length and self.capacity < fed and length < fed:
            raise GentwinError(f"cannot rewind to {length}: the sliding-window KV cache holds only the last "
                               f"{self.capacity} of {fed} positions, so the tokens needed at that point have already "
                               "been evicted. Increase model.decoder.sliding_window.cache_slack in "
                               "genai_config.json to keep more positions resident, or rewind before the cache fills")


def layer_caches(config, graph, rows: int, max_length: int, share_buffer: bool, device: str) -> list[LayerCache]:
    """Every layer's cache, in layer order, as onnxruntime-genai allocates them for ROWS rows (batch times
    beams) on DEVICE ("cpu" or "cuda")."""
    decoder = config.decoder
    caches = []
    for layer in decoder.attention_layers:
        past, present = decoder.past_names(layer), decoder.present_names(layer)
        covered = decoder.layer_kind(layer) == WINDOWED_KV_LAYER
        # The peer sizes a shared buffer by the window wherever decoder.sliding_window covers the layer, whether
        # its attention op keeps a window or not. Without a shared buffer it feeds such a layer a past that
        # grows, as any other (and allocates its present for the window only, so it fails past that many
        # positions, where gentwin runs on: an attention op without a window attends to the whole past).
        shared = decoder.sliding_window.capacity(max_length, WINDOW_SLACK[device]) if covered else max_length
        if layer in graph.windowed_layers:  # its attention op evicts from a window-sized buffer itself
            kind, capacity = WINDOWED_KV_LAYER, shared
            if capacity < decoder.sliding_window.window_size:
                raise GentwinError(f"max_length {max_length} is below the sliding window of "
                                   f"{decoder.sliding_window.window_size} positions, which the windowed KV cache must "
                                   "hold (onnxruntime's GroupQueryAttention refuses a smaller one)")
        else:
            kind, capacity = KV_LAYER, shared if share_buffer else None
        leading = (2, rows) if decoder.combined_past else (rows,)            # gpt2: keys and values in one tensor
        caches.append(LayerCache(layer, kind, tuple(past), tuple(present), graph.input_types[past[0]],
                                 (*leading, decoder.num_key_value_heads), (decoder.head_size,), capacity, max_length))
    for layer in decoder.conv_layers:
        past, present = decoder.conv_names(layer)
        channels, width = graph.input_shapes[past][1:]                     # checked fixed at load (model_check)
        caches.append(LayerCache(layer, CONV_LAYER, (past,), (present,), graph.input_types[past],
                                 (rows, channels, width), (), None, max_length))
    for layer in decoder.recurrent_layers:
        for past, present in zip(*decoder.recurrent_names(layer)):
            state_shape = graph.input_shapes[past][1:]                     # checked fixed at load (model_check)
            caches.append(LayerCache(layer, RECURRENT_LAYER, (past,), (present,), graph.input_types[past],
                                     (rows, *state_shape), (), None, max_length))
    return sorted(caches, key=lambda cache: cache.layer)


class CachedState:
    caches = ()  # the engine's per-layer caches, each with a `spec` (LayerCache)

    def __init__(self, graph, config, batch_size: int, num_beams: int, share_buffer: bool):
        self.graph, self.config = graph, config
        names = config.decoder.input_names
        # in the peer's order, which its run log shows
        self.position_input_names = names["input_ids"], names["position_ids"], names["attention_mask"]
        self.positions = position_inputs.position_rules(config.model_type)(config.pad_token_id, batch_size)
        self.windowed = bool(graph.windowed_layers)  # some attention op evicts from a window-sized buffer
        if self.windowed:
            _check_windowed_cache_options(num_beams, share_buffer)

    def position_feeds(self, input_ids: np.ndarray) -> dict:
        """input_ids, attention_mask and position_ids (gentwin.position_inputs) for a run on INPUT_IDS [R, S],
        those the graph takes, by name."""
        mask, positions = self.positions.next(input_ids)                                    # [R, T], [R, S]
        feeds = dict(zip(self.position_input_names, (input_ids, positions, mask)))
        return {name: value for name, value in feeds.items() if name in self.graph.input_types}

    @staticmethod
    def log_inputs(inputs: dict) -> None:
        """The run log's entry of the tensors a run is about to be fed (set_log_options model_input_values)."""
        if run_log.wanted("model_input_values"):
            run_log.write_tensors("model_input_values", {name: to_host(value) for name, value in inputs.items()}, True)

    @staticmethod
    def logs_outputs() -> bool:
        return run_log.wanted("model_output_shapes") or run_log.wanted("model_output_values")

    def log_outputs(self, outputs: dict) -> None:
        """The run log's entries of a run's outputs: their shapes (model_output_shapes, which the peer writes
        before the run, from the buffers it binds) and their values (model_output_values), in the peer's
        order: the logits, each layer's presents, then the rest."""
        first = [self.config.decoder.output_names["logits"],
                 *(name for cache in self.caches for name in cache.spec.present_names)]
        ordered = {name: to_host(outputs[name]) for name in [*first, *outputs] if name in outputs}
        for option, with_values in (("model_output_shapes", False), ("model_output_values", True)):
            if run_log.wanted(option):
                run_log.write_tensors(option, ordered, with_values)

    def check_run(self, input_ids: np.ndarray) -> None:
        """Raise, before anything changes, if a run on INPUT_IDS [R, S] cannot be read or the positions or the
        caches cannot take it: a row of pads alone has no token to read logits at; a windowed KV cache takes
        no right-padded batch (its attention op counts every row's tokens from the mask)."""
        last = position_inputs.last_real_token_index(input_ids, self.config.pad_token_id)  # [R]
        self.positions.check_next(input_ids)
        if not self.windowed or self.positions.length or self.positions.batch_size == 1:
            return
        short = np.flatnonzero(last + 1 < input_ids.shape[1])
        if short.size:
            row = int(short[0])
            raise GentwinError(f"a model with a sliding-window KV cache takes no right-padded batch: row {row} has "
                               f"{last[row] + 1} tokens before its padding, of {input_ids.shape[1]} (onnxruntime's "
                               "GroupQueryAttention refuses it: seqlens_k is too small for sequence_length)")

    def check_rewind(self, length: int) -> None:
        """Raise, before anything changes, if some layer cannot go back to LENGTH positions."""
        for cache in self.caches:
            cache.spec.check_rewind(length, self.positions.length)

    def rewind(self, length: int) -> None:
        """Forget every position from LENGTH on (batch size 1, or LENGTH 0)."""
        self.check_rewind(length)
        for cache in self.caches:
            cache.rewind(length)
        self.positions.rewind(length)

    def reorder(self, row_indices: np.ndarray) -> None:
        """Beam search: row i becomes a copy of row ROW_INDICES[i]."""
        for cache in self.caches:
            cache.reorder(row_indices)

    def snapshot(self) -> dict:
        """Copies of every cache's positions held, the mask and the positions (see api.Generator.snapshot)."""
        length = self.positions.length
        return {"caches": [cache.snapshot(length) for cache in self.caches], "positions": self.positions.snapshot()}

    def restore(self, snapshot: dict) -> None:
        """Copy SNAPSHOT in. A windowed cache's slots are as many in every generator that can hold the
        snapshot's tokens (max_length at least that many), so its resident positions land where they were."""
        for cache, tensors in zip(self.caches, snapshot["caches"]):
            cache.restore(tensors)
        self.positions.restore(snapshot["positions"])
        self.forget_last_run()

    def present_names(self) -> set[str]:
        return {name for cache in self.caches for name in cache.spec.present_names}

    def forget_last_run(self) -> None:
        raise NotImplementedError


def _check_windowed_cache_options(num_beams: int, share_buffer: bool) -> None:
    """A windowed KV cache runs only in the buffer its attention op evicts from, as in the peer, where beam
    search and a growing past give the op an empty one ("KV cache capacity (0) must be at least
    local_window_size")."""
    if num_beams > 1:
        raise GentwinError(f"beam search (num_beams {num_beams}) is not supported on a model with a sliding-window "
                           "KV cache: onnxruntime-genai sizes that cache only without beams, and its attention op "
                           "then refuses the empty past it gets")
    if not share_buffer:
        raise GentwinError("a model with a sliding-window KV cache needs the search option past_present_share_buffer: "
                           "without it onnxruntime-genai gives its attention op an empty past, which it refuses")
