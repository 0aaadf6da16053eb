"""attention_mask and position_ids, built from the tokens as onnxruntime-genai 0.18 builds them.

The rules, measured against the peer (tests/test_generate_vs_peer.py):
- Batch size 1: no padding is assumed; the mask is all ones and positions count from 0, even past pads.
- Batch size > 1, first run: padding is on the RIGHT. Trailing pad tokens of a row are masked out and get
  position 0; every token before the row's last real token is attended to, pads included.
- Later runs (one token per row when batch > 1): the mask grows by a column of ones and each row's position
  is one past its previous one, so a row's generated tokens follow its last real prompt token.
- Logits are read at each row's last real (non-pad) token of the run.
"""

from __future__ import annotations

import numpy as np

from gentwin.config import MROPE_TYPES
from gentwin.errors import GentwinError


def last_real_token_index(input_ids: np.ndarray, pad_token_id: int) -> np.ndarray:
    """Index of each row's last non-pad token, where its logits are read."""
    batch, seq = input_ids.shape
    is_real = input_ids != pad_token_id                                   # [B, S]
    if seq > 1 and not is_real.any(axis=1).all():
        row = int(np.flatnonzero(~is_real.any(axis=1))[0])
        raise GentwinError(f"row {row} of input_ids holds only pad tokens ({pad_token_id}); it has no token to predict from")
    return seq - 1 - np.argmax(is_real[:, ::-1], axis=1)                   # [B]


def logits_positions(declared_shape: tuple, new_tokens: int) -> int:
    """How many positions of logits a run on NEW_TOKENS tokens gives, by the logits' DECLARED_SHAPE: one where
    the graph fixes it so (the builder's prune_lm_head=1, which computes the run's last position only, as the
    peer's Model::IsPruned reads it), else one per token."""
    return 1 if len(declared_shape) == 3 and declared_shape[1] == 1 else new_tokens


def logits_at_last_tokens(logits, input_ids: np.ndarray, pad_token_id: int, to_device=np.asarray):
    """LOGITS [R, S, V] of a run on INPUT_IDS [R, S], read at each row's last real token: [R, V] float32,
    a copy, where LOGITS are (TO_DEVICE moves the host indices there). Logits of one position ([R, 1, V]:
    one new token, or a pruned LM head) are read there, as the peer reads them: a pruned head's are the
    run's last position's, a pad's in a right-padded row."""
    if logits.shape[1] == 1:
        return logits[:, 0, :].astype(np.float32)                            # [R, V]
    last = last_real_token_index(input_ids, pad_token_id)                   # [R]
    return logits[to_device(np.arange(len(last))), to_device(last), :].astype(np.float32)  # [R, V]


def first_run_inputs(input_ids: np.ndarray, pad_token_id: int, batch_size: int):
    """Mask, positions and each row's last position for the first run on INPUT_IDS [R, S].

    R is batch_size times the number of beams; rows are judged by batch_size, as the peer does.
    """
    rows, seq = input_ids.shape
    if batch_size == 1:
        mask = np.ones((rows, seq), dtype=np.int64)                          # [R, S]
        return mask, np.broadcast_to(np.arange(seq), (rows, seq)), np.full(rows, seq - 1)
    last = last_real_token_index(input_ids, pad_token_id)                   # [R]
    mask = (np.arange(seq)[None, :] <= last[:, None]).astype(np.int64)      # [R, S]
    return mask, np.arange(seq)[None, :] * mask, last                       # [R, S], [R, S], [R]


def next_attention_mask(mask: np.ndarray, new_tokens: int) -> np.ndarray:
    """Mask after appending NEW_TOKENS to every row: the old mask then ones."""
    batch = mask.shape[0]
    return np.concatenate([mask, np.ones((batch, new_tokens), dtype=mask.dtype)], axis=1)  # [B, T + new]


def next_position_ids(last_positions: np.ndarray, new_tokens: int) -> np.ndarray:
    """Positions of NEW_TOKENS appended after each row's last position."""
    return last_positions[:, None] + 1 + np.arange(new_tokens)[None, :]  # [B, new]


class PositionInputs:
    """A generator's attention mask and positions so far, shared by both engines' decoder states."""

    def __init__(self, pad_token_id: int, batch_size: int):
        self.pad_token_id, self.batch_size = pad_token_id, batch_size
        self.mask = None            # [R, T] attention mask so far; None before the first run
        self.last_positions = None  # [R] position of each row's last token

    def next(self, input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The attention mask [R, T + S] and position_ids [R, S] for a run on INPUT_IDS [R, S]."""
        if self.mask is None:
            self.mask, positions, self.last_positions = first_run_inputs(
                input_ids, self.pad_token_id, self.batch_size)                   # [R, S], [R, S], [R]
        else:
            new = input_ids.shape[1]
            self.mask = next_attention_mask(self.mask, new)                       # [R, T]
            positions = next_position_ids(self.last_positions, new)              # [R, S]
            self.last_positions = positions[:, -1]                                # [R]
        return self.mask, positions

    def rewind(self, length: int) -> None:
        """Forget every position from LENGTH on (batch size 1, or LENGTH 0)."""
        if length == 0:
            self.mask = self.last_positions = None
        else:
            self.mask = self.mask[:, :length]                                     # [R, length]
            self.last_positions = np.full(self.mask.shape[0], length - 1)

    @property
    def length(self) -> int:
        """Positions run so far."""
        return 0 if self.mask is None else self.mask.shape[1]

    def snapshot(self) -> tuple:
        """Copies of the mask and positions, for DecoderState.snapshot."""
        return (None, None) if self.mask is None else (self.mask.copy(), self.last_positions.copy())

    def restore(self, snapshot: tuple) -> None:
        mask, last_positions = snapshot
        self.mask = None if mask is None else mask.copy()
        self.last_positions = None if last_positions is None else last_positions.copy()


class MultimodalPositionInputs:
    """The attention mask and position_ids of the Qwen-VL family's text decoders (config.MROPE_TYPES), as the
    peer builds them for text (its Qwen2VLPositionInputs): position_ids are [3, R, S], a temporal, a height and
    a width position per token (MRotaryEmbedding's streams), all three equal for text.

    - First run: every pad token, wherever it is, is masked out and gets position 0; the other tokens count
      0, 1, 2, ... Each row keeps its rope delta, (its last position + 1) - S: 0 without pads.
    - Later runs: positions continue from the positions run so far plus the row's delta, and the mask is all
      ones, the first run's pads included (the peer fills it so).
    - A rewind keeps the deltas (the peer's does): appending after rewind_to(0) is a later run.
    """

    def __init__(self, pad_token_id: int, batch_size: int):
        self.pad_token_id, self.batch_size = pad_token_id, batch_size
        self.mask = None            # [R, T] attention mask so far; None before the first run
        self.rope_deltas = None     # [R] each row's delta, from its first run

    def next(self, input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The attention mask [R, T + S] and position_ids [3, R, S] for a run on INPUT_IDS [R, S]."""
        rows, new = input_ids.shape
        if self.rope_deltas is None:
            real = input_ids != self.pad_token_id                                    # [R, S]
            positions = np.where(real, np.cumsum(real, axis=1) - 1, 0)               # [R, S]
            self.rope_deltas = positions.max(axis=1) + 1 - new                       # [R]
            self.mask = real.astype(np.int64)                                        # [R, S]
        else:
            run = self.length
            positions = run + self.rope_deltas[:, None] + np.arange(new)[None, :]    # [R, S]
            self.mask = np.ones((rows, run + new), dtype=np.int64)                  # [R, T + S]
        return self.mask, np.broadcast_to(positions, (3, rows, new))                 # [R, T], [3, R, S]

    def rewind(self, length: int) -> None:
        """Forget every position from LENGTH on (batch size 1, or LENGTH 0); the deltas stay."""
        self.mask = self.mask[:, :length]                                             # [R, length]

    @property
    def length(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]

    def snapshot(self) -> tuple:
        return (None, None) if self.mask is None else (self.mask.copy(), self.rope_deltas.copy())

    def restore(self, snapshot: tuple) -> None:
        mask, rope_deltas = snapshot
        self.mask = None if mask is None else mask.copy()
        self.rope_deltas = None if rope_deltas is None else rope_deltas.copy()


def position_rules(model_type: str):
    """The class that builds a model's attention mask and positions, by its genai_config.json type."""
    return MultimodalPositionInputs if model_type in MROPE_TYPES else PositionInputs


# The official builder's causal block for MultiHeadAttention (its fp16 and bf16 CPU graphs), expanded over the past
BUILDER_MHA_CAUSAL_EXPAND = "/model/attn_mask_reformat/input_ids_subgraph/Expand"


def takes_chunks_over_past(graph) -> bool:
    """Whether the decoder GRAPH (an onnx GraphProto) can run several new tokens over a past in one run.

    The builder's mask subgraph for MultiHeadAttention cannot: it expands an [S, S] causal block to
    [B, 1, S, past + S], which ONNX's Expand allows only for a prompt (no past) or a single token (S = 1).
    The engines then feed such a chunk one token at a time, which computes the same attention.
    """
    return not any(node.name == BUILDER_MHA_CAUSAL_EXPAND for node in graph.node)
