"""What both engines' states of an encoder-decoder model share: onnxruntime-genai's `marian-ssru` (its
src/models/marian.cpp), an encoder run once on the prompt and a decoder with a recurrent (SSRU) state.

The prompt's run:
- each row of the prompt [R, S] ends at its first pad token: the EOS token goes there, and pads after it,
  so the encoder reads [R, S + 1] tokens and the mask token != pad;
- the decoder then starts every row from the BOS token, input_ids [R] (one token per row, 1-D), with
  the encoder's outputs as encoder_hidden_states, the mask as encoder_attention_mask, rnn_states_prev zeros
  [3, R, encoder.hidden_size] and past_key_values_length [0].
Every later run feeds one token per row, the rnn_states of the run before (in the rows' new order after
beam search) and past_key_values_length one more. The SSRU state sums up every token before, so the
decoder cannot go back but to the start: rewind_to(0) forgets the prompt, and the next append_tokens
runs the encoder again.

An engine subclasses `SsruState` and says in `run_graph` how to run one of its graphs on feeds already of
the graph's types; its graphs have `input_types`: {input name: numpy dtype} and `input_shapes`: {input
name: declared shape}.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gentwin import logging_options as run_log
from gentwin.devices import to_host
from gentwin.errors import GentwinError

SSRU_STATE_SLOTS = 3  # the peer's rnn_states_prev is [3, R, H]
# The order the peer binds the decoder's inputs in, which its run log shows
DECODER_LOG_ORDER = ("input_ids", "past_key_values_length", "encoder_attention_mask", "encoder_hidden_states",
                     "rnn_states_prev")


def source_tokens(input_ids: np.ndarray, pad_token_id: int, eos_token_id: int) -> np.ndarray:
    """The encoder's tokens for the prompt INPUT_IDS [R, S]: each row up to its first pad, EOS, then pads."""
    rows, width = input_ids.shape
    is_pad = input_ids == pad_token_id                                                   # [R, S]
    lengths = np.where(is_pad.any(axis=1), is_pad.argmax(axis=1), width)                 # [R]
    columns = np.arange(width + 1)[None, :]                                              # [1, S + 1]
    widened = np.concatenate([input_ids, np.full((rows, 1), pad_token_id, input_ids.dtype)], axis=1)  # [R, S + 1]
    tokens = np.where(columns < lengths[:, None], widened, pad_token_id)                 # [R, S + 1]
    return np.where(columns == lengths[:, None], eos_token_id, tokens)                   # [R, S + 1]


@dataclass(frozen=True)
class Memory:
    """What a decoder run reads that earlier runs wrote."""

    encoder_outputs: np.ndarray  # [R, S + 1, H]
    mask: np.ndarray             # [R, S + 1]
    rnn_states: np.ndarray       # [3, R, H] the last run's, for the next
    step: int                    # past_key_values_length of the last run


class SsruState:
    """One generator's encoder outputs and SSRU state; `run` feeds new tokens and returns their logits."""

    def __init__(self, encoder_graph, graph, config, rows: int):
        self.encoder_graph, self.graph, self.config, self.rows = encoder_graph, graph, config, rows
        self.names = {**config.decoder.input_names, **config.decoder.output_names}
        self.memory: Memory | None = None  # None until the prompt's run
        self.inputs = {}            # the last decoder run's inputs, by name, for get_input
        self.outputs = {}           # its outputs, by name, for get_output
        self.extra_inputs = {}      # further inputs by name, set by the api: set_model_input

    def run_graph(self, graph, feeds: dict) -> dict:
        """The outputs of GRAPH on FEEDS, by name, on the host."""
        raise NotImplementedError

    def check_run(self, input_ids: np.ndarray) -> None:
        """Raise, before anything changes, if the decoder cannot take INPUT_IDS [R, S]: after the prompt, one
        token per row (in the peer's words)."""
        if self.memory is not None and input_ids.shape[1] != 1:
            raise GentwinError(f"MarianInputIDs::Update: got {input_ids.size} token(s) but the input tensor holds "
                               f"{self.rows} (batch_size * num_beams). Every batch entry needs exactly one token.")

    def run(self, input_ids: np.ndarray) -> np.ndarray:
        """Run the decoder on INPUT_IDS [R, S] (the prompt, through the encoder first, or one token per row);
        return the logits of the next token, [R, V]."""
        if self.memory is None:
            memory = self._encode(input_ids)
            tokens = np.full(self.rows, self.config.bos_token_id, np.int32)                    # [R]
        else:
            memory = replace(self.memory, step=self.memory.step + 1)
            tokens = input_ids[:, 0]                                                          # [R]
        names = self.names
        feeds = {names["input_ids"]: tokens, names["encoder_hidden_states"]: memory.encoder_outputs,
                 names["encoder_attention_mask"]: memory.mask, names["rnn_states_prev"]: memory.rnn_states,
                 names["past_key_values_length"]: np.array([memory.step]), **self.extra_inputs}
        inputs = typed(self.graph, feeds)
        self.outputs = logged_run(self.run_graph, self.graph, _in_order(inputs, DECODER_LOG_ORDER, names),
                                  (names["rnn_states"], names["logits"]))
        self.inputs, self.memory = inputs, replace(memory, rnn_states=self.outputs[names["rnn_states"]])
        return self.outputs[names["logits"]].astype(np.float32)                              # [R, V]

    def _encode(self, input_ids: np.ndarray) -> Memory:
        """Run the encoder on the prompt INPUT_IDS [R, S]; the memory of the decoder's first run."""
        config, encoder = self.config, self.config.encoder
        source = source_tokens(input_ids, config.pad_token_id, config.eos_token_ids[0])        # [R, S + 1]
        mask = source != config.pad_token_id                                                  # [R, S + 1]
        feeds = {encoder.input_names["input_ids"]: source, encoder.input_names["attention_mask"]: mask}
        outputs = logged_run(self.run_graph, self.encoder_graph, typed(self.encoder_graph, feeds),
                             (encoder.output_names["encoder_outputs"],))
        state_type = self.graph.input_types[self.names["rnn_states_prev"]]
        rnn_states = np.zeros((SSRU_STATE_SLOTS, self.rows, encoder.hidden_size), state_type)  # [3, R, H]
        return Memory(outputs[encoder.output_names["encoder_outputs"]], mask, rnn_states, 0)

    def check_rewind(self, length: int) -> None:
        if length != 0:
            raise GentwinError(f"rewind_to({length}) is not supported on a marian-ssru model: its decoder's "
                               "recurrent state (rnn_states) sums up every token before, and cannot be cut back to "
                               "a shorter sequence; only rewind_to(0) starts again (onnxruntime-genai keeps the state "
                               "and goes on from it)")

    def rewind(self, length: int) -> None:
        """Forget the prompt (LENGTH 0): the next run is a prompt's, through the encoder."""
        self.check_rewind(length)
        self.memory = None
        self.forget_last_run()

    def reorder(self, row_indices: np.ndarray) -> None:
        """Beam search: row i's state becomes a copy of row ROW_INDICES[i]'s."""
        rows = to_host(row_indices)
        self.memory = replace(self.memory, rnn_states=self.memory.rnn_states[:, rows])          # [3, R, H]

    def snapshot(self) -> Memory | None:
        """The memory, copied (see api.Generator.snapshot)."""
        return self.memory and _copied(self.memory)

    def restore(self, snapshot: Memory | None) -> None:
        self.memory = snapshot and _copied(snapshot)
        self.forget_last_run()

    def forget_last_run(self) -> None:
        self.inputs, self.outputs = {}, {}


def logged_run(run_graph, graph, inputs: dict, output_names: tuple[str, ...]) -> dict:
    """RUN_GRAPH(GRAPH, INPUTS), with the run log's entries of its inputs and of OUTPUT_NAMES (set_log_options
    model_input_values, model_output_shapes, model_output_values) in the peer's order."""
    if run_log.wanted("model_input_values"):
        run_log.write_tensors("model_input_values", inputs, True)
    outputs = run_graph(graph, inputs)
    logged = {name: outputs[name] for name in output_names}
    for option, with_values in (("model_output_shapes", False), ("model_output_values", True)):
        if run_log.wanted(option):
            run_log.write_tensors(option, logged, with_values)
    return outputs


def _in_order(inputs: dict, order: tuple[str, ...], names: dict) -> dict:
    """INPUTS with the fields ORDER names first, in that order (the peer binds and logs them so), then the rest."""
    first = [names[field] for field in order]
    return {name: inputs[name] for name in [*first, *inputs] if name in inputs}


def typed(graph, feeds: dict) -> dict:
    """FEEDS converted to the element types GRAPH declares for them; raises, in onnxruntime's words, where one
    does not have the dimensions the graph fixes (the peer's fixtures fix the batch and the source length)."""
    for name, value in feeds.items():
        declared = graph.input_shapes[name]
        wrong = [(axis, got, want) for axis, (got, want) in enumerate(zip(np.shape(value), declared))
                 if isinstance(want, int) and got != want]
        if wrong:
            axis, got, want = wrong[0]
            raise GentwinError(f"Got invalid dimensions for input: {name} for the following indices\n index: {axis} "
                               f"Got: {got} Expected: {want}\n Please fix either the inputs/outputs or the model.")
    return {name: np.asarray(value).astype(graph.input_types[name], copy=False) for name, value in feeds.items()}


def _copied(memory: Memory) -> Memory:
    return Memory(memory.encoder_outputs.copy(), memory.mask.copy(), memory.rnn_states.copy(), memory.step)
