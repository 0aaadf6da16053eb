"""Speculative decoding: draft, verify, accept, roll back.

Decoding runs the model once per token. A round instead guesses K tokens (the draft: what followed the last
time the sequence's final N - 1 tokens occurred, gentwin.speculative.NGramLookup; or a small draft model's
greedy choices) and runs the target ONCE on them, after the token still waiting to be fed: one run gives the
logits after every draft token, K + 1 rows.

Each generate_next_token then chooses its token from the next row with the ordinary search (penalties,
greedy or seeded sampling, one random draw per token as without drafts), so the stream is the one decoding
without drafts gives, by construction. While the chosen token is the draft's, the KV cache already holds it
and the next row is ready; the first token that differs (or the bonus after the last row) ends the round,
and the KV cache is rolled back to the tokens chosen: the rejected drafts' positions are dropped.

gentwin/fast/speculative.py runs the same round, reading the verify run's rows where its logits are.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from gentwin import speculative
from gentwin.devices import to_host
from gentwin.errors import GentwinError


@dataclass
class Round:
    draft: list[int]           # the K proposed tokens
    rows: object               # [K + 1, V] the target's logits after the waiting token and after each draft token
    filled: bool               # as many drafts as the width asked for
    milliseconds: float        # drafting and verifying, for the adaptive width
    chosen: int = 0            # tokens chosen so far from the rows (the drafts accepted, then one more)
    planned: bool = False      # greedy: the counts below were decided when the round started (Speculation.plan)
    accepted: int = 0
    evaluated: int = 0
    queued: int = 0            # the tokens the peer's queue holds for this round


class NGramDrafter:
    """Drafts from the sequence itself: what followed the last occurrence of its final N - 1 tokens."""

    def __init__(self, options: dict, stats: speculative.Stats):
        self.chained, self.stats = options["ngram_chained_lookup"], stats
        self.lookup = speculative.NGramLookup(options["ngram_size"])

    def propose(self, generator, k: int) -> list[int]:
        """Up to K tokens from the n-gram index, brought up to date with the sequence first."""
        self.round_ended(generator)
        stats, start = self.stats, time.perf_counter()
        draft = self.lookup.propose(k, self.chained)
        stats.lookup_ms += speculative.milliseconds_since(start)
        stats.draft_ms += speculative.milliseconds_since(start)
        stats.ngram_lookup_hits += bool(draft)
        stats.ngram_lookup_misses += not draft
        stats.ngram_lookup_tokens_proposed += len(draft)
        if self.chained and len(draft) > 1:
            stats.ngram_chained_tokens_proposed += len(draft) - 1
        return draft

    def round_ended(self, generator) -> None:
        """Index the tokens committed since the last sync (all of them again after a rewind)."""
        tokens = generator.sequences.current()[0]                                       # [length]
        stats, start = self.stats, time.perf_counter()
        indexed = len(self.lookup.history)
        if len(tokens) == indexed:
            return
        if len(tokens) < indexed:
            self.lookup.reset(tokens)
        else:
            self.lookup.append(tokens[indexed:])
        stats.ngram_history_syncs += 1
        stats.ngram_history_tokens_synced += len(tokens) if len(tokens) < indexed else len(tokens) - indexed
        stats.history_sync_ms += speculative.milliseconds_since(start)


class DraftModel:
    """Drafts from a smaller model of the same vocabulary (genai_config.json's model.draft), with a KV cache of
    its own: caught up with the sequence (what it holds beyond their common start is dropped), then run on
    its own greedy choices until K are proposed."""

    def __init__(self, generator, stats: speculative.Stats):
        model, options = generator.model, generator.options
        self.graph, self.stats = model.draft_graph, stats
        # A growing past (no buffer shared with the present): every attention graph takes one, whatever the
        # target's search options say about sharing (a MultiHeadAttention draft cannot share).
        self.state = model.DecoderState(model.draft_graph, model.draft_config, 1, 1, options["max_length"], False)
        self.held: list[int] = []  # the tokens the draft's KV cache holds

    def propose(self, generator, k: int) -> list[int]:
        start = time.perf_counter()
        tokens = [int(token) for token in generator.sequences.current()[0]]
        kept = 0
        while kept < min(len(self.held), len(tokens) - 1) and self.held[kept] == tokens[kept]:
            kept += 1                                      # the last token is run again for its logits
        self.state.rewind(kept)
        self.held = self.held[:kept]
        logits = self.run(tokens[kept:])                                                # [V]
        draft = [int(np.argmax(logits))]
        while len(draft) < k:
            draft.append(int(np.argmax(self.run(draft[-1:]))))
        self.stats.draft_ms += speculative.milliseconds_since(start)
        return draft

    def run(self, tokens: list[int]) -> np.ndarray:
        """The draft's logits after TOKENS, [V] on the host: one run, or one a token where the graph cannot
        take several over its past."""
        ids = np.array([tokens], dtype=np.int32)                                        # [1, S]
        columns = [ids] if self.graph.takes_chunks_over_past or not self.held else np.split(ids, len(tokens), 1)
        for column in columns:
            logits = self.state.run(column)                                             # [1, V]
            self.stats.draft_forward_passes += 1
        self.held += tokens
        return to_host(logits)[0]

    def round_ended(self, generator) -> None:
        """Nothing: the next proposal catches the draft up with the sequence."""


class Speculation:
    """One generator's speculation: the api calls `before_choice` and `after_choice` around each
    generate_next_token's choice, and `interrupt` before anything else changes the sequence."""

    def __init__(self, options: dict, generator):
        self.logits_name = generator.model.config.decoder.output_names["logits"]
        self.adaptive = speculative.AdaptiveK(options["max_draft_tokens"], options["min_adaptive_k"])
        self.cooldown = speculative.Cooldown(options["cooldown"])
        self.stats = speculative.Stats()
        self.drafter = NGramDrafter(options, self.stats) if options["ngram_size"] else DraftModel(generator, self.stats)
        self.round: Round | None = None

    # -- draft and verify ------------------------------------------------------------------------------

    def before_choice(self, generator) -> None:
        """Start a round if none is under way and the drafter proposes; else the step is an ordinary one."""
        if self.round is not None:
            return
        if self.cooldown.remaining:
            self.cooldown.take_step()
            self.stats.standard_fallback_steps += 1
            return
        sequences = generator.sequences
        k = min(self.adaptive.k, sequences.max_length - sequences.length)  # no draft beyond max_length
        start = time.perf_counter()
        draft = self.drafter.propose(generator, k)
        if not draft:
            self.stats.standard_fallback_steps += 1
            return
        rows = self.verify(generator, draft)                                            # [K + 1, V]
        self.round = Round(draft, rows, k == self.adaptive.k and len(draft) == k,
                           speculative.milliseconds_since(start))
        self.stats.rounds += 1
        self.stats.draft_tokens_proposed += len(draft)
        self.stats.rounds_by_k[len(draft)] = self.stats.rounds_by_k.get(len(draft), 0) + 1
        if not generator.options["do_sample"]:
            self.plan(generator, self.round)
        generator.logits = rows[0].copy()[None, :]                                      # [1, V]

    def verify(self, generator, draft: list[int]):
        """Run the target once on the tokens it has not seen (the one waiting, if any) and the DRAFT; the rows
        that judge the draft: the logits for the next choice, then after each draft token, [K + 1, V]."""
        pending = generator.logits  # [1, V] or None: computed already (after append_tokens) or not
        waiting = generator.tokens_to_feed() if pending is None else np.zeros((1, 0), np.int32)  # [1, W]
        tokens = np.concatenate([waiting, np.array([draft], dtype=np.int32)], axis=1)    # [1, W + K]
        start = time.perf_counter()
        rows = self.verify_rows(generator.state, generator.model.graph, tokens)         # [W + K, V]
        self.stats.verify_ms += speculative.milliseconds_since(start)
        self.stats.target_forward_passes += 1
        self.stats.target_verify_forward_passes += 1
        generator.fed_length = generator.sequences.length  # the drafts are held past it, until accepted
        if pending is None:
            return rows[waiting.shape[1] - 1 :]                                         # [K + 1, V]
        return self.concatenate([pending, rows])                                        # [K + 1, V]

    def verify_rows(self, state, graph, tokens: np.ndarray) -> np.ndarray:
        """The target's logits after each of TOKENS [1, S], [S, V] float32, on the host: one run, or one run a
        token where the graph cannot take several over its past (position_inputs.takes_chunks_over_past)."""
        if not graph.takes_chunks_over_past:
            return self.concatenate([state.run(tokens[:, [column]]) for column in range(tokens.shape[1])])
        state.run(tokens)
        logits = state.outputs[self.logits_name]                                        # [1, S, V]
        return self.checked_rows(logits, tokens)[0].astype(np.float32)                  # [S, V]

    concatenate = staticmethod(np.concatenate)

    @staticmethod
    def checked_rows(logits, tokens: np.ndarray):
        if logits.shape[1] != tokens.shape[1]:
            raise GentwinError("N-gram decoding requires one target logits row per verified token; the target "
                               "returned last-token-only logits at runtime.")
        return logits

    # -- accept and roll back --------------------------------------------------------------------------

    def after_choice(self, generator) -> None:
        """Judge the token just chosen: the draft's, it is kept and the next row is ready; else the round ends."""
        current, stats = self.round, self.stats
        if current is None:
            return
        chosen, index = int(generator.next_tokens[0]), current.chosen
        current.chosen += 1
        sequences = generator.sequences
        if sequences.all_finished:  # EOS: the peer drops it from its queue rather than emit it
            stats.tokens_discarded += 1
        else:
            stats.tokens_emitted += 1
        agrees = index < len(current.draft) and chosen == current.draft[index]
        if not current.planned:
            self.count_choice(current, agrees, sequences)
        if agrees and not sequences.done:
            generator.fed_length += 1                                                   # the cache holds it
            generator.logits = current.rows[current.chosen].copy()[None, :]             # [1, V]
            return
        self.end(generator, interrupted=sequences.all_finished or agrees)  # agrees: at EOS or max_length

    def plan(self, generator, current: Round) -> None:
        """Greedy search: the round's outcome now, as the peer counts it when a round starts. Each row is
        processed as the search will process it, after the draft tokens before it; the choices themselves are
        still made one a call, by the search (after_choice)."""
        tokens, search, options = generator.sequences.current(), generator.search, generator.options   # [1, L]
        accepted = 0
        for index, row in enumerate(current.rows):
            history = np.concatenate([tokens, np.array([current.draft[:index]], dtype=np.int32)], axis=1)
            logits = row.copy()[None, :]                                                # [1, V]
            search.process_logits(logits, history, options, generator.model.config.eos_token_ids,
                                  generator.sequences.prompt_length, options["logit_bias"])
            if index == len(current.draft) or int(to_host(logits).argmax()) != current.draft[index]:
                break
            accepted += 1
        current.planned, current.accepted = True, accepted
        current.evaluated = min(accepted + 1, len(current.draft))
        current.queued = accepted + 1
        stats = self.stats
        stats.draft_tokens_evaluated += current.evaluated
        stats.draft_tokens_accepted += accepted
        stats.tokens_queued += current.queued
        stats.bonus_tokens += accepted == len(current.draft)
        stats.correction_tokens += accepted < len(current.draft)

    def count_choice(self, current: Round, agrees: bool, sequences) -> None:
        """Sampling: the round counted a choice at a time (its draws are the search's, made one a call)."""
        stats, index = self.stats, current.chosen - 1
        stats.tokens_queued += 1
        current.queued += 1
        if index == len(current.draft):
            stats.bonus_tokens += 1
            return
        current.evaluated += 1
        stats.draft_tokens_evaluated += 1
        if not agrees:
            stats.correction_tokens += 1
            return
        current.accepted += 1
        stats.draft_tokens_accepted += 1
        if sequences.done and current.chosen == len(current.draft) and not sequences.all_finished:
            stats.bonus_tokens += 1  # max_length after the last draft: the peer decides the bonus, then drops it
            stats.tokens_queued += 1
            current.queued += 1

    def end(self, generator, interrupted: bool = False) -> None:
        """Roll the KV cache back to the tokens fed, and count the round: interrupted if it had tokens left."""
        current, stats = self.round, self.stats
        self.round = None
        generator.state.rewind(generator.fed_length)
        left = current.queued - current.chosen
        stats.tokens_discarded += left
        if interrupted or left:
            stats.interrupted_rounds += 1
            return
        stats.completed_rounds += 1
        if not generator.sequences.done:  # the round's tokens, seen by the drafter as the peer does when one ends
            self.drafter.round_ended(generator)
        if current.accepted == 0:
            stats.zero_accept_rounds += 1
        elif current.accepted == current.evaluated:
            stats.full_accept_rounds += 1
        else:
            stats.partial_accept_rounds += 1
        self.cooldown.record(len(current.draft), self.adaptive.min_k, current.evaluated, current.accepted)
        self.adaptive.record(len(current.draft), current.evaluated, current.accepted, current.chosen,
                             current.filled, current.milliseconds)

    def interrupt(self, generator, rewound: bool = False) -> None:
        """append_tokens, rewind_to, set_logits, snapshot or restore comes: drop the drafts still in the cache.
        A rewind also starts the adaptive width and the cooldown over, as in the peer."""
        if self.round is not None:
            self.end(generator, interrupted=True)
        if rewound:
            self.adaptive.reset()
            self.cooldown.reset()

    def get_stats(self) -> dict:
        buffered = self.round.queued - self.round.chosen if self.round else 0
        return self.stats.as_peer_dict(self.round is not None, buffered, self.adaptive, self.cooldown)
