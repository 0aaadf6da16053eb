"""Logits processors: what happens to a step's logits before a token is chosen from them.

The peer's three, in the peer's order (RunStandardDecodingStep, CPU search):

    min_length            EOS ids can't be chosen while the sequence is shorter than min_length
    repetition_penalty    every token already in the sequence is made less likely (HF's rule)
    no_repeat_ngram_size  a token that would repeat an n-gram already in the sequence is banned

"The sequence" is everything the Generator holds, the prompt included (padding too, for left-padded batch
rows): the peer reads its whole token history, not only what it generated.

Then gentwin's extras, off by default so the peer's tokens are untouched:

    presence_penalty, frequency_penalty   OpenAI's rule, over the GENERATED tokens only
    logit_bias                            {token_id: bias} added to the logits

The extras come after the peer's processors and before temperature (which sampling.py applies inside the
softmax): a bias or penalty is in logit units whatever the temperature, as in vLLM and OpenAI's API. A banned
token stays banned: its logit is float32's lowest, and no finite penalty or bias of ordinary size moves it.

Every function modifies logits float32 [rows, vocab] in place and returns None; rows are batch * beams,
sequences int32 [rows, length] are the tokens so far, row for row.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

F32 = np.float32
FLOAT_LOWEST = np.finfo(np.float32).min  # std::numeric_limits<float>::lowest(): the peer bans with it, not -inf


def process_logits(logits, sequences, options: dict, eos_token_ids, prompt_length: int, logit_bias=None) -> None:
    """All processors in order, each skipped when its option is at its default. prompt_length: where the
    generated tokens start in sequences (for the extras). logit_bias: {token_id: bias} or None."""
    apply_min_length(logits, sequences.shape[1], options.get("min_length", 0), eos_token_ids)
    apply_repetition_penalty(logits, sequences, options.get("repetition_penalty", 1.0))
    apply_no_repeat_ngram(logits, sequences, options.get("no_repeat_ngram_size", 0))
    generated = sequences[:, prompt_length:]  # [rows, generated so far]
    apply_presence_frequency_penalties(
        logits, generated, options.get("presence_penalty", 0.0), options.get("frequency_penalty", 0.0)
    )
    apply_logit_bias(logits, logit_bias or {})


def all_at_defaults(options: dict, sequence_length: int, logit_bias=None) -> bool:
    """Whether every processor would leave the logits alone (each one below then returns at once)."""
    return (sequence_length >= options.get("min_length", 0) and F32(options.get("repetition_penalty", 1.0)) == 1
            and options.get("no_repeat_ngram_size", 0) <= 0 and not logit_bias
            and F32(options.get("presence_penalty", 0.0)) == 0 and F32(options.get("frequency_penalty", 0.0)) == 0)


# ----------------------------------------------------------------------------------------------------------------
# The peer's processors


def apply_min_length(logits, sequence_length: int, min_length: int, eos_token_ids) -> None:
    """Ban every EOS id while sequence_length (the prompt included) is below min_length."""
    if sequence_length >= min_length:
        return
    vocab = logits.shape[1]
    eos = [token for token in eos_token_ids if 0 <= token < vocab]
    logits[:, eos] = FLOAT_LOWEST


def apply_repetition_penalty(logits, sequences, penalty) -> None:
    """HF's repetition penalty: each distinct token of the sequence, once, however often it occurs, has its
    logit divided by the penalty if positive (zero included) and multiplied by it if negative. float32 math:
    a banned EOS (lowest) that also appears in the prompt becomes -inf when penalty > 1, as in the peer."""
    penalty = F32(penalty)
    if penalty == 1:
        return
    seen = _token_counts(sequences, logits.shape[1]) > 0  # [rows, vocab]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        penalised = np.where(logits < 0, logits * penalty, logits / penalty)  # [rows, vocab]
    logits[seen] = penalised[seen]


def apply_no_repeat_ngram(logits, sequences, ngram_size: int) -> None:
    """Ban each token that would complete an n-gram already present: for every earlier n-gram whose first
    n - 1 tokens equal the sequence's last n - 1, its last token. n = 1 bans every token seen so far."""
    length = sequences.shape[1]
    if ngram_size <= 0 or length < ngram_size:
        return
    vocab = logits.shape[1]
    for row, sequence in enumerate(sequences):
        ngrams = sliding_window_view(sequence, ngram_size)  # [length - n + 1, n]
        continues_suffix = np.all(ngrams[:, :-1] == sequence[length - ngram_size + 1 :], axis=1)  # [length - n + 1]
        banned = ngrams[continues_suffix, -1]  # [matches]
        logits[row, banned[(banned >= 0) & (banned < vocab)]] = FLOAT_LOWEST


# ----------------------------------------------------------------------------------------------------------------
# gentwin's extras


def apply_presence_frequency_penalties(logits, generated, presence_penalty, frequency_penalty) -> None:
    """OpenAI's penalties over generated [rows, n] (the generated tokens only, never the prompt):
    logit[t] -= presence * (count_t > 0) + frequency * count_t, computed in float32 in that order."""
    presence, frequency = F32(presence_penalty), F32(frequency_penalty)
    if presence == 0 and frequency == 0:
        return
    counts = _token_counts(generated, logits.shape[1]).astype(F32)  # [rows, vocab]
    with np.errstate(over="ignore"):
        logits -= presence * (counts > 0) + frequency * counts


def apply_logit_bias(logits, logit_bias: dict) -> None:
    """Add each bias (as float32) to its token's logit in every row; a token outside the vocabulary is an error."""
    vocab = logits.shape[1]
    for token, bias in logit_bias.items():
        if not 0 <= int(token) < vocab:
            raise ValueError(f"logit_bias token id {token} is outside the vocabulary [0, {vocab})")
        with np.errstate(over="ignore"):
            logits[:, int(token)] += F32(bias)


def _token_counts(sequences, vocab: int) -> np.ndarray:
    """How often each token id in [0, vocab) occurs in each row of sequences [rows, n]: int [rows, vocab]."""
    rows = len(sequences)
    counts = np.zeros((rows, vocab), np.int64)  # [rows, vocab]
    row_of = np.broadcast_to(np.arange(rows)[:, None], sequences.shape)  # [rows, n]
    valid = (sequences >= 0) & (sequences < vocab)  # [rows, n]
    np.add.at(counts, (row_of[valid], sequences[valid]), 1)
    return counts
