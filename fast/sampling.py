"""From a row of logits to a token, with the reference's exact tokens, vectorised.

gentwin/reference/sampling.py reproduces the peer's sampler step by step, including libstdc++'s heap-based
partial_sort, in pure Python over the whole vocabulary. Here np.argpartition picks the candidates and
np.argsort orders them, which changes nothing that decides the draw:

- the kept scores, best first, are the same sequence of values whatever order equal scores take, so the
  softmax, the top_p cut, the nucleus and the probabilities are the same float32 numbers, and the draw from
  the shared std::mt19937 stream picks the same position;
- only which token sits at that position can differ, and only when its score is shared with another token.
  Then (rarely, with real logits) the reference's heap order settles it.

Rows holding a NaN go to the reference whole: comparisons with NaN make "best first" the heap's own business.
"""

from __future__ import annotations

import numpy as np

from gentwin.reference import sampling as exact
from gentwin.reference.cpp_arithmetic import running_sum
from gentwin.reference.sampling import discrete_distribution, renormalised, softmax_numerators
from gentwin.search_options import sampling_method, sampling_options

F32 = np.float32
FIRST_NUCLEUS_ROUND = 16  # the peer's FindNucleus sorts the best 16 tokens first, then 4 times more each round


def choose_next_tokens(logits, options: dict, rng, finished=None, pad_token_id: int = 0) -> np.ndarray:
    """One token per row of logits [batch, vocab], as reference.sampling.choose_next_tokens chooses it."""
    method = sampling_method(options)
    batch, _ = logits.shape
    active = np.arange(batch) if finished is None else np.flatnonzero(~np.asarray(finished, bool))  # [active]
    tokens = np.full(batch, pad_token_id, np.int32)  # [batch]
    if method == "greedy":
        tokens[active] = np.argmax(logits[active], axis=1)  # the first of equal maxima, as the peer
        return tokens
    for row in active:
        scores = np.asarray(logits[row], F32)  # [vocab]
        if np.isnan(scores).any():
            tokens[row] = exact.choose_next_tokens(scores[None, :], options, rng)[0]
        else:
            tokens[row] = sample(scores, options, method, rng)
    return tokens


def sample(scores, options: dict, method: str, rng) -> int:
    """Draw one token from a row of scores [vocab] by top_k, top_p or top_k_top_p."""
    _, top_k, top_p, temperature = sampling_options(options)
    if method == "top_p":
        max_score = scores.max()
        kept = find_nucleus(scores, F32(top_p), max_score, temperature)  # [kept]
        probs = renormalised(softmax_numerators(scores[kept], max_score, temperature))
    else:  # top_k is top_k_top_p without the cut, as in the reference
        kept = best_first(scores, min(top_k, len(scores)))  # [k]
        kept, probs = exact.top_k_probabilities(scores, kept, temperature, top_p if method == "top_k_top_p" else 0)
    position = discrete_distribution(probs, rng)
    if np.count_nonzero(scores == scores[kept[position]]) == 1:
        return int(kept[position])
    exact_order = (exact.find_nucleus(scores, F32(top_p), scores.max(), temperature)[0] if method == "top_p"
                   else exact.top_k_distribution(scores, top_k, temperature, 0)[0])
    return int(exact_order[position])


def best_first(scores, count: int) -> np.ndarray:
    """Ids [count] of the COUNT highest scores, highest first (equal scores in no particular order)."""
    vocab = len(scores)
    candidates = np.argpartition(-scores, count - 1)[:count] if count < vocab else np.arange(vocab)  # [count]
    return candidates[np.argsort(-scores[candidates], kind="stable")]


def find_nucleus(scores, p, max_score, temperature) -> np.ndarray:
    """The peer's FindNucleus (see reference.sampling.find_nucleus) on a growing best-first head.

    The peer's rounds sort 16, 64, 256, ... tokens and, in each, stop at the first token whose running sum
    reaches p of (running sum + a bound on the unsorted rest); a stop on a round's last token does not count.
    Running sums continue across rounds, so one cumulative sum over the head gives every round's. Returns the
    nucleus's ids [cutoff], best first.
    """
    vocab = len(scores)
    count = min(FIRST_NUCLEUS_ROUND, vocab)
    while True:
        order = best_first(scores, count)  # [count]
        numerators = softmax_numerators(scores[order], max_score, temperature)  # [count]
        running = running_sum(numerators)  # [count]
        unsorted_left = (vocab - 1 - np.arange(count)).astype(F32)  # [count]
        stops = running >= p * (running + unsorted_left * numerators)  # [count]
        stops[_round_ends(count, vocab)] = False
        if stops.any() or count == vocab:
            break
        count = min(4 * count, vocab)
    cutoff = int(np.argmax(stops)) + 1 if stops.any() else vocab
    if vocab <= 64:  # the peer redoes small vocabularies with the exact cumulative sum
        order = best_first(scores, vocab)  # [vocab]
        running = running_sum(softmax_numerators(scores[order], max_score, temperature))  # [vocab]
        reached = np.flatnonzero(running >= p * running[-1])
        if reached.size:
            cutoff = reached[0] + 1
    return order[:cutoff]


def _round_ends(count: int, vocab: int) -> list[int]:
    """Positions of the last token of each of the peer's rounds within the first COUNT, bar the final round."""
    ends, k = [], FIRST_NUCLEUS_ROUND
    while k < min(count + 1, vocab):
        ends.append(k - 1)
        k *= 4
    return ends
