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

The same code runs on numpy (CPU) and CuPy (CUDA) arrays: the vocabulary-wide work (argmax, partition,
sort, the tie count) runs where the logits are, and only the candidates' scores come to the host, where
the float32 arithmetic of the peer and the draw from the mt19937 stream happen, so a GPU picks the same
tokens from the same logits as the CPU.
"""

from __future__ import annotations

import numpy as np

from gentwin.devices import to_host
from gentwin.fast.device import array_module
from gentwin.reference import sampling as exact
from gentwin.reference.cpp_arithmetic import running_sum
from gentwin.reference.sampling import discrete_distribution, renormalised, softmax_numerators
from gentwin.search_options import sampling_method, sampling_options

F32 = np.float32
FIRST_NUCLEUS_ROUND = 16  # the peer's FindNucleus sorts the best 16 tokens first, then 4 times more each round


def choose_next_tokens(logits, options: dict, rng, finished=None, pad_token_id: int = 0) -> np.ndarray:
    """One token per row of logits [batch, vocab] (host or device), as reference.sampling.choose_next_tokens
    chooses it. Returns host tokens [batch]."""
    method = sampling_method(options)
    if method == "greedy":
        return greedy_tokens(logits, finished, pad_token_id)
    xp = array_module(logits)
    batch, _ = logits.shape
    active = np.arange(batch) if finished is None else np.flatnonzero(~np.asarray(finished, bool))  # [active]
    tokens = np.full(batch, pad_token_id, np.int32)  # [batch]
    for row in active:
        scores = logits[int(row)].astype(F32, copy=False)  # [vocab]
        if bool(xp.isnan(scores).any()):
            tokens[row] = exact.choose_next_tokens(to_host(scores)[None, :], options, rng)[0]
        else:
            tokens[row] = sample(scores, options, method, rng)
    return tokens


def greedy_tokens(logits, finished=None, pad_token_id: int = 0) -> np.ndarray:
    """Every row's highest logit, the first of equal maxima as in the peer; pad_token_id for a row marked in
    finished [batch]. Host tokens [batch]."""
    # The argmax of finished rows too: one call over the batch costs less than picking the other rows out
    tokens = to_host(array_module(logits).argmax(logits, axis=1)).astype(np.int32)  # [batch]
    if finished is not None:
        tokens[np.asarray(finished, bool)] = pad_token_id
    return tokens


def sample(scores, options: dict, method: str, rng) -> int:
    """Draw one token from a row of scores [vocab] by top_k, top_p or top_k_top_p."""
    _, top_k, top_p, temperature = sampling_options(options)
    if method == "top_p":
        max_score = F32(to_host(scores.max()))
        kept, kept_scores = find_nucleus(scores, F32(top_p), max_score, temperature)  # [kept] each, on the host
        probs = renormalised(softmax_numerators(kept_scores, max_score, temperature))
    else:  # top_k is top_k_top_p without the cut, as in the reference
        kept = best_first(scores, min(top_k, len(scores)))  # [k]
        kept_scores = to_host(scores[kept])  # [k]
        cut, probs = exact.top_k_probabilities(kept_scores, np.arange(len(kept_scores)), temperature,
                                               top_p if method == "top_k_top_p" else 0)
        kept, kept_scores = to_host(kept)[cut], kept_scores[cut]  # [kept] each
    position = discrete_distribution(probs, rng)
    if int(array_module(scores).count_nonzero(scores == kept_scores[position])) == 1:
        return int(kept[position])
    scores = to_host(scores)  # a tie at the drawn position: the reference's heap order settles it
    exact_order = (exact.find_nucleus(scores, F32(top_p), scores.max(), temperature)[0] if method == "top_p"
                   else exact.top_k_distribution(scores, top_k, temperature, 0)[0])
    return int(exact_order[position])


def best_first(scores, count: int):
    """Ids [count] of the COUNT highest scores, highest first (equal scores in no particular order), on the
    scores' device."""
    xp = array_module(scores)
    vocab = len(scores)
    candidates = xp.argpartition(-scores, count - 1)[:count] if count < vocab else xp.arange(vocab)  # [count]
    return candidates[xp.argsort(-scores[candidates])]


def find_nucleus(scores, p, max_score, temperature) -> tuple[np.ndarray, np.ndarray]:
    """The peer's FindNucleus (see reference.sampling.find_nucleus) on a growing best-first head.

    The peer's rounds sort 16, 64, 256, ... tokens and, in each, stop at the first token whose running sum
    reaches p of (running sum + a bound on the unsorted rest); a stop on a round's last token does not count.
    Running sums continue across rounds, so one cumulative sum over the head gives every round's. Returns the
    nucleus's ids [cutoff], best first, and their scores [cutoff], on the host.
    """
    vocab = len(scores)
    count = min(FIRST_NUCLEUS_ROUND, vocab)
    while True:
        order = best_first(scores, count)  # [count]
        head = to_host(scores[order])  # [count]
        numerators = softmax_numerators(head, max_score, temperature)  # [count]
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
        head = to_host(scores[order])  # [vocab]
        running = running_sum(softmax_numerators(head, max_score, temperature))  # [vocab]
        reached = np.flatnonzero(running >= p * running[-1])
        if reached.size:
            cutoff = reached[0] + 1
    return to_host(order[:cutoff]), head[:cutoff]


def _round_ends(count: int, vocab: int) -> list[int]:
    """Positions of the last token of each of the peer's rounds within the first COUNT, bar the final round."""
    ends, k = [], FIRST_NUCLEUS_ROUND
    while k < min(count + 1, vocab):
        ends.append(k - 1)
        k *= 4
    return ends
