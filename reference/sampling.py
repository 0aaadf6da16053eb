"""From a row of logits to a token, exactly as onnxruntime-genai 0.18.0 chooses it on the CPU.

The peer has four ways to choose (Generator::InitializeSamplingMethod picks one per Generator):

    greedy        the highest logit; the first one on ties
    top_k         softmax(logits / temperature) over the k highest logits, then draw
    top_p         softmax over a "nucleus" of best tokens whose probability reaches p, then draw (the peer
                  bounds the tail loosely, so its nucleus can be a few tokens longer than the shortest)
    top_k_top_p   top_k, then the nucleus cut applied inside those k, then draw

A draw is std::discrete_distribution fed by one std::mt19937 per Generator; the stream carries on
from token to token, and a distribution of a single token draws nothing.

The file reads top down: which method, the methods themselves, the random number generator, and last
the helpers that reproduce the peer to the bit (libstdc++'s heap-based partial_sort, which decides the
order of equal logits; glibc's expf; float32 sums in the peer's order).
"""

from __future__ import annotations

import numpy as np

from gentwin.reference.cpp_arithmetic import expf, float32_sum, partial_sort_descending, running_sum
from gentwin.search_options import sampling_method, sampling_options

F32 = np.float32


# ----------------------------------------------------------------------------------------------------------------
# The methods


def choose_next_tokens(logits, options: dict, rng, finished=None, pad_token_id: int = 0) -> np.ndarray:
    """One token per row of logits [batch, vocab], rows taken in order from one shared rng.

    A row marked in finished [batch] (its sequence already produced EOS) gets pad_token_id and draws
    nothing, as GreedySearch_Cpu::PadIfAlreadyEOS skips it. logits must already be processed (penalties.py).
    """
    method = sampling_method(options)
    _, top_k, top_p, temperature = sampling_options(options)
    batch, _ = logits.shape
    finished = np.zeros(batch, bool) if finished is None else np.asarray(finished, bool)
    tokens = np.full(batch, pad_token_id, np.int32)  # [batch]
    for row in np.flatnonzero(~finished):
        scores = np.asarray(logits[row], F32)  # [vocab]
        if method == "greedy":
            tokens[row] = greedy_token(scores)
            continue
        if method == "top_p":
            kept, probs = top_p_distribution(scores, top_p, temperature)
        else:  # top_k is top_k_top_p without the cut: the peer passes it top_p 0
            kept, probs = top_k_distribution(scores, top_k, temperature, top_p if method == "top_k_top_p" else 0)
        tokens[row] = kept[discrete_distribution(probs, rng)]
    return tokens


def greedy_token(scores) -> int:
    """ArgMax: the highest score; on ties the lowest token id (the peer replaces only on a strictly greater)."""
    return int(np.argmax(scores))


def top_k_distribution(scores, top_k: int, temperature, top_p=0.0) -> tuple[np.ndarray, np.ndarray]:
    """The k best tokens (best first) and their temperature softmax; with 0 < top_p < 1, cut to the shortest
    head whose probability reaches top_p and renormalise. Returns token ids [kept] and float32 probs [kept]."""
    k = min(top_k, len(scores))
    order = _descending_order(scores, k)  # [vocab], order[:k] are the k best, equal scores in the peer's order
    return top_k_probabilities(scores, order[:k], temperature, top_p)


def top_k_probabilities(scores, kept, temperature, top_p=0.0) -> tuple[np.ndarray, np.ndarray]:
    """The second half of top_k_distribution, given the k best token ids KEPT [k], best first."""
    k = len(kept)
    probs = softmax_numerators(scores[kept], scores[kept[0]], temperature)  # [k]
    total = float32_sum(probs)
    if total > 0:
        probs = probs / total
    if 0 < top_p < 1:
        reached = np.flatnonzero(running_sum(probs) >= F32(top_p))
        keep = reached[0] + 1 if reached.size else k
        kept, probs = kept[:keep], probs[:keep]  # [keep]
    return kept, renormalised(probs)


def top_p_distribution(scores, top_p, temperature) -> tuple[np.ndarray, np.ndarray]:
    """The nucleus (best first) and its temperature softmax. Returns token ids [kept] and float32 probs [kept]."""
    max_score = scores.max()
    order, cutoff = find_nucleus(scores, F32(top_p), max_score, temperature)
    kept = order[:cutoff]  # [cutoff]
    return kept, renormalised(softmax_numerators(scores[kept], max_score, temperature))


def find_nucleus(scores, p, max_score, temperature) -> tuple[np.ndarray, int]:
    """How many of the best tokens make the nucleus, found as the peer's FindNucleus finds it.

    It sorts the best 16 tokens, then 64, 256, ... and never sums the whole vocabulary. Instead it bounds what
    the unsorted rest can weigh: at sorted token i, at most (vocab - i - 1) * exp(score_i). It stops at the
    first i where running_sum >= p * (running_sum + that bound). The bound is loose, so the nucleus can hold
    more tokens than an exact cumulative softmax gives (a token holding ~all the mass still comes with a
    second one); and a stop on the last token of a round does not end the search (the peer's loop only ends
    on a stop before the round's end). Vocabularies of at most 64 tokens are then redone exactly.
    Returns the token order [vocab] (its head sorted) and the nucleus size.
    """
    vocab = len(scores)
    order = np.arange(vocab, dtype=np.int32)  # [vocab]
    sorted_count, k, prefix_sum, cutoff = 0, min(16, vocab), F32(0), 0
    while True:
        partial_sort_descending(order, scores, sorted_count, k)
        numerators = softmax_numerators(scores[order[sorted_count:k]], max_score, temperature)  # [k - sorted_count]
        running = running_sum(numerators, start=prefix_sum)  # [k - sorted_count]
        unsorted_left = np.arange(vocab - sorted_count - 1, vocab - k - 1, -1).astype(F32)  # [k - sorted_count]
        stops = np.flatnonzero(running >= p * (running + unsorted_left * numerators))
        cutoff = sorted_count + stops[0] + 1 if stops.size else k
        prefix_sum = running[-1]  # only read when the round ended without an early stop
        sorted_count = k
        if cutoff < k or k == vocab:
            break
        k = min(4 * k, vocab)
    if vocab <= 64:
        partial_sort_descending(order, scores, sorted_count, vocab)
        numerators = softmax_numerators(scores[order], max_score, temperature)  # [vocab]
        running = running_sum(numerators)  # [vocab]
        reached = np.flatnonzero(running >= p * running[-1])
        if reached.size:
            cutoff = reached[0] + 1
    return order, int(cutoff)


# ----------------------------------------------------------------------------------------------------------------
# The random number generator: std::mt19937, std::generate_canonical, std::discrete_distribution (libstdc++)


class Mt19937:
    """std::mt19937. Seeded with an integer it is std::mt19937(seed): numpy's legacy seeding is the same
    init_genrand recurrence, and its raw outputs are the engine's 32-bit outputs."""

    def __init__(self, seed: int | None = None):
        self._bits = np.random.MT19937()  # seeded from the OS: the state for seed None
        if seed is not None:
            self._bits._legacy_seeding(seed)

    def next_u32(self) -> int:
        return int(self._bits.random_raw())


def make_rng(random_seed: int) -> Mt19937:
    """The Generator's engine (CreateRandomGenerator). A negative seed, -1 by default, means fresh entropy:
    the peer feeds 624 words of std::random_device through std::seed_seq; numpy seeds from the OS likewise.
    The seed is a C++ int in the peer: gentwin.search_options refuses any other, as the peer does."""
    return Mt19937(random_seed if random_seed >= 0 else None)


def generate_canonical(rng) -> float:
    """std::generate_canonical<double, 53>(mt19937): a double in [0, 1) from two 32-bit draws, low word first
    (53 bits need ceil(53 / 32) = 2 draws). The sum is rounded to double, so it can reach 1.0; libstdc++ then
    returns the largest double below 1."""
    low, high = rng.next_u32(), rng.next_u32()
    value = (float(low) + float(high) * 2.0**32) / 2.0**64
    return value if value < 1.0 else float(np.nextafter(1.0, 0.0))


def discrete_distribution(weights, rng) -> int:
    """std::discrete_distribution<int>(weights)(rng) as libstdc++ computes it.

    The float weights become doubles, are divided by their sequential sum, and summed again into a cumulative
    table whose last entry is forced to 1.0; the result is the first entry >= a generate_canonical draw
    (std::lower_bound). A single weight means the table is empty: the answer is 0 and nothing is drawn.
    """
    weights = np.asarray(weights, np.float64)  # [n]
    if len(weights) < 2:
        return 0
    cumulative = np.cumsum(weights / np.cumsum(weights)[-1])  # [n]
    cumulative[-1] = 1.0
    return int(np.searchsorted(cumulative, generate_canonical(rng), side="left"))


# ----------------------------------------------------------------------------------------------------------------
# Bit-exactness helpers


def softmax_numerators(scores, max_score, temperature) -> np.ndarray:
    """exp((score - max) * (1 / temperature)) in float32, in that order: the peer subtracts the max first and
    multiplies by the reciprocal of the temperature rather than dividing by it."""
    inv_temperature = F32(1) / F32(temperature)
    with np.errstate(over="ignore", invalid="ignore"):  # lowest() - max may round to -inf; exp gives 0
        return expf((np.asarray(scores, F32) - F32(max_score)) * inv_temperature)


def renormalised(probs) -> np.ndarray:
    """probs * (1 / their sum), the peer's last step before discrete_distribution (multiply by the inverse)."""
    total = float32_sum(probs)
    return probs * (F32(1) / total if total > 0 else F32(0))


def _descending_order(scores, k: int) -> np.ndarray:
    """Token ids [vocab] whose first k are the k highest scores, highest first, as the peer's
    std::partial_sort(ids, ids + k, ids + vocab, score greater) leaves them."""
    order = np.arange(len(scores), dtype=np.int32)
    partial_sort_descending(order, scores, 0, k)
    return order
