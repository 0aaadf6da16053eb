"""The logits processors of gentwin/reference/penalties.py, for logits that live on the GPU.

Each processor changes the logits of a few token ids only: the tokens of the sequences, the EOS ids, the
logit_bias keys. So for device logits just those columns come to the host, the reference's processors run
on them there with the ids renumbered into that short list, and the columns go back. The arithmetic is the
reference's float32, so the tokens are the same as on the CPU, and the vocabulary never crosses the bus.
Host logits (the CPU provider) go to the reference's processors directly.
"""

from __future__ import annotations

import numpy as np

from gentwin.devices import to_host
from gentwin.fast.device import array_module
from gentwin.reference import penalties


def process_logits(logits, sequences, options: dict, eos_token_ids, prompt_length: int, logit_bias=None) -> None:
    """reference.penalties.process_logits on LOGITS [rows, vocab], host or device, in place."""
    if isinstance(logits, np.ndarray):
        penalties.process_logits(logits, sequences, options, eos_token_ids, prompt_length, logit_bias)
    elif not penalties.all_at_defaults(options, sequences.shape[1], logit_bias):  # else no columns need to travel
        process_touched_columns(logits, sequences, options, eos_token_ids, prompt_length, logit_bias)


def process_touched_columns(logits, sequences, options: dict, eos_token_ids, prompt_length: int,
                            logit_bias=None) -> None:
    """The processors run on the host on the only columns of LOGITS [rows, vocab] they can change."""
    xp, vocab = array_module(logits), logits.shape[1]
    logit_bias = logit_bias or {}
    bias_ids = np.fromiter(logit_bias, np.int64, len(logit_bias))             # [biases]
    touched = touched_token_ids(sequences, eos_token_ids, bias_ids, vocab)    # [n] sorted
    columns = xp.asarray(touched)                                             # [n] on the logits' device
    compact = to_host(logits[:, columns]).astype(np.float32)                  # [rows, n]
    bias_columns = renumbered(bias_ids, touched, vocab)                       # [biases]
    penalties.process_logits(
        compact, renumbered(sequences, touched, vocab), options,
        renumbered(eos_token_ids, touched, vocab).tolist(), prompt_length,
        dict(zip(bias_columns.tolist(), logit_bias.values())))
    logits[:, columns] = xp.asarray(compact)


def touched_token_ids(sequences, eos_token_ids, bias_ids, vocab: int) -> np.ndarray:
    """Every token id in [0, vocab) a processor might read or change, sorted: [n]."""
    ids = np.concatenate([np.ravel(sequences), np.asarray(eos_token_ids, np.int64), bias_ids])  # int64
    return np.unique(ids[(ids >= 0) & (ids < vocab)])


def renumbered(ids: np.ndarray, touched: np.ndarray, vocab: int) -> np.ndarray:
    """IDS in the numbering of the TOUCHED columns: a touched id becomes its column; ids outside [0, vocab)
    stay outside [0, n) and stay distinct, so the processors skip them and n-grams compare as before."""
    ids = np.asarray(ids, np.int64)
    inside = (ids >= 0) & (ids < vocab)
    columns = np.searchsorted(touched, np.where(inside, ids, 0))
    return np.where(inside, columns, np.where(ids < 0, ids, len(touched) + ids - vocab))
