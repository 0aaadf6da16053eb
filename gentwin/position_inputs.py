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

from gentwin.errors import GentwinError


def last_real_token_index(input_ids: np.ndarray, pad_token_id: int) -> np.ndarray:
    """Index of each row's last non-pad token, where its logits are read."""
    batch, seq = input_ids.shape
    is_real = input_ids != pad_token_id                                   # [B, S]
    if seq > 1 and not is_real.any(axis=1).all():
        row = int(np.flatnonzero(~is_real.any(axis=1))[0])
        raise GentwinError(f"row {row} of input_ids holds only pad tokens ({pad_token_id}); it has no token to predict from")
    return seq - 1 - np.argmax(is_real[:, ::-1], axis=1)                   # [B]


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
