"""Beam search, token for token as onnxruntime-genai 0.18.0 runs it on the CPU (BeamSearch_Cpu, BeamSearchScorer).

Each batch entry keeps num_beams rows ("beams"). One step:

    1. the logits processors (min_length, repetition_penalty, no_repeat_ngram_size), as for greedy search;
    2. every row's log-softmax plus that row's running score: num_beams * vocab candidate continuations;
    3. the best 2 * num_beams candidates, in libstdc++'s partial_sort order (which decides ties);
    4. the scorer walks them best first: an EOS among the first num_beams ends a hypothesis (the sequence
       without its EOS, scored by sum_logprobs / length ** length_penalty); any other token continues a
       beam, until num_beams beams continue;
    5. the rows are reordered to the beams they continue, and the chosen tokens appended.

A batch entry is done once it holds num_beams hypotheses and, without early_stopping, no continuing
candidate could beat the worst of them. The search is done when every entry is, or at max_length.
Asking for a sequence finalizes: every open beam becomes a hypothesis too, once, for the Generator's life.

The peer's quirks are kept, because the tokens depend on them:
- a done entry's rows are all given the pad token and row 0 of the whole batch (not of the entry);
- early_stopping=False looks for the best candidate score at offset batch * num_beams of the candidate
  list, not batch * 2 * num_beams: entry 1 of a batch of 2 reads half of entry 0's candidates;
- if fewer than num_beams candidates continue (a model with several EOS ids), the remaining beams keep
  the previous step's token, score and row (on the first step the peer has none: it reads unset memory
  and may crash; gentwin continues row 0 with token 0);
- a sequence asked for mid-generation finalizes for good: later steps only add EOS hypotheses, and
  with early_stopping the next step ends the search (the hypotheses are then full).
"""

from __future__ import annotations

import numpy as np

from gentwin.reference import penalties
from gentwin.reference.cpp_arithmetic import expf, float32_sum, logf, partial_sort_descending, powf

F32 = np.float32
# Beams 1.. start far behind beam 0: all rows hold the same prompt, and step 1 must not pick one token num_beams times
INITIAL_OTHER_BEAM_SCORE = F32(-1e9)

def log_softmax(scores: np.ndarray) -> np.ndarray:
    """The peer's LogSoftMax on float32 [vocab] with temperature 1 (its multiply by 1/1 changes nothing):
    x - max, minus logf of the sequential float32 sum of expf(x - max). logf is the C library's: glibc's
    is not correctly rounded, so only it gives the peer's bits."""
    with np.errstate(over="ignore", invalid="ignore"):  # lowest() - max can be -inf, inf - inf NaN, as in the peer
        shifted = scores - scores.max()                                       # [vocab]
    log_sum = logf(float32_sum(expf(shifted)))
    return shifted - log_sum                                                  # [vocab]


def max_element(values) -> F32:
    """*std::max_element: the first of the largest, found with < alone, so a NaN is passed over unless first."""
    largest = values[0]
    for value in values[1:]:
        if largest < value:
            largest = value
    return largest


class BeamHypotheses:
    """One batch entry's finished sequences, best first, at most num_beams of them."""

    def __init__(self, num_beams: int, length_penalty: float):
        self.num_beams = num_beams
        self.length_penalty = F32(length_penalty)
        self.scores: list[float] = []         # descending
        self.sequences: list[np.ndarray] = []  # [length] each, in the order of scores
        self.done = False

    def length_normalized(self, sum_logprobs, length: int) -> F32:
        """sum_logprobs / length ** length_penalty in float32; std::pow(float, float) is powf, glibc's again."""
        with np.errstate(over="ignore"):  # lowest() over a power below 1 (length_penalty < 0) is -inf, as in C++
            return F32(sum_logprobs) / powf(length, self.length_penalty)

    def add(self, sequence: np.ndarray, sum_logprobs) -> None:
        score = self.length_normalized(sum_logprobs, len(sequence))
        if len(self.scores) == self.num_beams:
            if score <= self.scores[-1]:  # a tie with the worst does not get in
                return
            del self.scores[-1], self.sequences[-1]
        position = len(self.scores)
        while position > 0 and score > self.scores[position - 1]:  # strictly: an equal score stays behind
            position -= 1
        self.scores.insert(position, score)
        self.sequences.insert(position, sequence)

    def is_full(self) -> bool:
        return len(self.scores) == self.num_beams

    def can_improve(self, best_sum_logprobs, current_length: int) -> bool:
        return bool(self.scores[-1] < self.length_normalized(best_sum_logprobs, current_length))


class BeamSearch:
    """The search of a Generator with num_beams > 1 (see search.Search for the interface)."""

    def __init__(self, options: dict, config):
        self.options, self.config = options, config
        self.batch_size, self.num_beams = options["batch_size"], options["num_beams"]
        self.hypotheses = [BeamHypotheses(self.num_beams, options["length_penalty"]) for _ in range(self.batch_size)]
        # What the last step chose for every beam, kept across steps: the peer reuses them (see the quirks)
        self.beam_scores = np.zeros((self.batch_size, self.num_beams), F32)   # [B, beams]
        self.beam_scores[:, 1:] = INITIAL_OTHER_BEAM_SCORE
        self.beam_tokens = np.zeros((self.batch_size, self.num_beams), np.int32)  # [B, beams]
        self.beam_rows = np.zeros((self.batch_size, self.num_beams), np.int32)    # [B, beams] rows they continue
        self.finalized = False

    def advance(self, logits: np.ndarray, sequences):
        """Process LOGITS [R, V] in place, choose every beam's continuation, reorder and extend SEQUENCES.
        Returns (tokens [R], row_order [R]): row i now continues what row row_order[i] held."""
        penalties.process_logits(logits, sequences.current(), self.options, self.config.eos_token_ids,
                                 sequences.prompt_length, self.options["logit_bias"])
        with np.errstate(over="ignore"):  # lowest() plus a negative beam score stays lowest, or is -inf
            scores = np.stack([log_softmax(row) for row in logits])             # [R, V]
            scores += self.beam_scores.reshape(-1, 1)                           # [R, V]
        top_beams, top_tokens, top_scores = self._best_candidates(scores)      # [B, 2 * beams] each
        for batch in range(self.batch_size):
            self._choose_beams(batch, top_beams[batch], top_tokens[batch], top_scores, sequences)
        row_order = self.beam_rows.reshape(-1).copy()                           # [R]
        tokens = self.beam_tokens.reshape(-1).copy()                            # [R]
        sequences.append_to_beams(tokens, row_order)
        return tokens, row_order

    def _best_candidates(self, scores: np.ndarray):
        """Each entry's 2 * num_beams best (beam, token) pairs, best first, ties in partial_sort's order.
        Returns beams, tokens and scores, each [B, 2 * beams]."""
        vocab = scores.shape[1]
        width = 2 * self.num_beams
        candidates = scores.reshape(self.batch_size, self.num_beams * vocab)   # [B, beams * V]
        best = np.empty((self.batch_size, width), np.int32)                    # [B, 2 * beams]
        for batch, entry_scores in enumerate(candidates):
            order = np.arange(len(entry_scores), dtype=np.int32)               # [beams * V]
            partial_sort_descending(order, entry_scores, 0, width)
            best[batch] = order[:width]
        return best // vocab, best % vocab, np.take_along_axis(candidates, best, axis=1)

    def _choose_beams(self, batch: int, beams, tokens, all_top_scores, sequences) -> None:
        """BeamSearchScorer::Process for one batch entry, walking its candidates (beams, tokens [2 * beams])
        best first. all_top_scores [B, 2 * beams] holds every entry's scores: the early_stopping=False
        window of this entry may reach into the previous one's."""
        hypotheses = self.hypotheses[batch]
        if hypotheses.done:
            self.beam_scores[batch], self.beam_tokens[batch], self.beam_rows[batch] = 0, self.config.pad_token_id, 0
            return
        top_scores = all_top_scores[batch]
        first_row = batch * self.num_beams
        continuing = 0
        for rank, (beam, token, score) in enumerate(zip(beams, tokens, top_scores)):
            if token in self.config.eos_token_ids:
                if rank < self.num_beams:  # an EOS ranked below the beam width is dropped, not stored
                    hypotheses.add(sequences.current()[first_row + beam].copy(), score)
                continue
            self.beam_scores[batch, continuing] = score
            self.beam_tokens[batch, continuing] = token
            self.beam_rows[batch, continuing] = first_row + beam
            continuing += 1
            if continuing == self.num_beams:
                break
        if not hypotheses.is_full():
            return
        if not self.options["early_stopping"]:
            window = all_top_scores.reshape(-1)[first_row : first_row + 2 * self.num_beams]  # [2 * beams]
            if hypotheses.can_improve(max_element(window), sequences.length):
                return
        hypotheses.done = True

    def is_done(self, sequences) -> bool:
        return all(entry.done for entry in self.hypotheses) or sequences.length == sequences.max_length

    def returned_rows(self, options: dict) -> int:
        return options["batch_size"] * options["num_return_sequences"]

    def sequence(self, sequences, index: int) -> np.ndarray:
        """BeamSearch_Cpu::GetSequence: the hypotheses of batch entry index // num_return_sequences, best first.
        The first call adds every open beam, with its running score, to its entry's hypotheses."""
        if not self.finalized:
            for batch, entry in enumerate(self.hypotheses):
                if not entry.done:
                    for beam, score in enumerate(self.beam_scores[batch]):
                        entry.add(sequences.current()[batch * self.num_beams + beam].copy(), score)
            self.finalized = True
        batch, rank = divmod(index, self.options["num_return_sequences"])
        return self.hypotheses[batch].sequences[rank].copy()  # [length]
