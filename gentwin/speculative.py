"""Speculative decoding's shared parts: the options, what a generator may combine them with, the n-gram index
that proposes drafts, the adaptive draft length, the cooldown, and the statistics.

onnxruntime-genai 0.18 names them so: `GeneratorParams.set_speculative_options(ngram_size=..., max_draft_tokens=...,
ngram_chained_lookup=..., min_adaptive_k=..., cooldown=...)`, a `speculative` section of genai_config.json with
the same names, and `Generator.get_speculative_stats()`. The round itself (draft, verify, accept, roll back) is
gentwin/reference/speculative.py, which gentwin/fast/speculative.py runs where its logits are.

Drafts come from an n-gram index of the sequence (`ngram_size`), or from a draft model: genai_config.json's
`model.draft`, a second decoder block (gentwin.config.draft_config) with its own KV cache, run greedily.
"""

from __future__ import annotations

import math
import time

from gentwin.config import WINDOWED_KV_LAYER, ConfigError
from gentwin.errors import GentwinError

MAX_DRAFT_TOKENS = 16  # the peer's ceiling for every width (kMaxK)
SPECULATIVE_DEFAULTS = {"max_draft_tokens": 4, "ngram_size": 0, "ngram_chained_lookup": False,
                        "min_adaptive_k": 0, "cooldown": False}
BOOL_OPTIONS = {"ngram_chained_lookup", "cooldown"}


class SpeculativeOptionError(GentwinError, ValueError):
    """A speculative option is unknown, of the wrong type, or out of range."""


def coerce_option(name: str, value):
    """One option checked as the peer checks it in set_speculative_options (its messages); returned as an int or
    a bool. The peer takes exactly Python bools, ints and floats (not numpy scalars), a float only if whole."""
    if name not in SPECULATIVE_DEFAULTS:
        raise SpeculativeOptionError(f'Unknown value "{name}"')
    if type(value) not in (bool, int, float):
        raise SpeculativeOptionError(f"Unknown speculative option type, must be bool, int, or float: {name}")
    if name in BOOL_OPTIONS:
        if type(value) is not bool:
            raise SpeculativeOptionError(f"{name} - Expected a bool but saw a number")
        return value
    if type(value) is bool:
        raise SpeculativeOptionError(f"{name} - Expected a number but saw a bool")
    if not math.isfinite(value) or value != int(value):
        raise SpeculativeOptionError(f"Field '{name}' value {value!r} is not an integer")
    if not -(2**31) <= value < 2**31:
        raise SpeculativeOptionError(f"Field '{name}' value {value:g} is out of int32 range [-2147483648, 2147483647]")
    return _checked_range(name, int(value))


def _checked_range(name: str, value: int) -> int:
    if name == "max_draft_tokens" and not 1 <= value <= MAX_DRAFT_TOKENS:
        raise SpeculativeOptionError(f"speculative.max_draft_tokens must be between 1 and {MAX_DRAFT_TOKENS} "
                                     f"Got: {value}.")
    if name == "ngram_size" and value != 0 and not 2 <= value <= MAX_DRAFT_TOKENS:
        raise SpeculativeOptionError(f"speculative.ngram_size must be 0 or between 2 and {MAX_DRAFT_TOKENS}. "
                                     f"Got: {value}.")
    if name == "min_adaptive_k" and not 0 <= value <= MAX_DRAFT_TOKENS:
        raise SpeculativeOptionError(f"speculative.min_adaptive_k must be 0 or between 1 and {MAX_DRAFT_TOKENS}. "
                                     f"Got: {value}.")
    return value


def configured(config) -> dict:
    """The options a model folder starts its GeneratorParams with: the defaults, then genai_config.json's
    `speculative` section (JSON booleans for the bool options, as the peer requires)."""
    section = config.raw.get("speculative", {})
    if not isinstance(section, dict):
        raise ConfigError("genai_config.json: 'speculative' must be an object")
    options = dict(SPECULATIVE_DEFAULTS)
    for name, value in section.items():
        try:
            options[name] = coerce_option(name, value)
        except SpeculativeOptionError as error:
            raise ConfigError(f"genai_config.json: speculative: {error}") from None
    return options


def as_peer_dict(options: dict) -> dict:
    """get_speculative_options' dict: the numbers as floats, as the peer returns them."""
    return {name: value if name in BOOL_OPTIONS else float(value) for name, value in options.items()}


def check_for_generator(speculative: dict, search: dict, config, has_draft: bool, prunes_logits: bool) -> None:
    """The peer's refusals when a Generator that drafts is made, in its order and words. PRUNES_LOGITS: the
    target's graph gives the logits of its last position only (position_inputs.prunes_logits), where verifying
    K drafts needs K + 1 rows of them."""
    if speculative["ngram_chained_lookup"] and not speculative["ngram_size"]:
        raise SpeculativeOptionError("speculative.ngram_chained_lookup requires speculative.ngram_size to enable "
                                     "n-gram decoding.")
    if has_draft:
        _check_draft_model(speculative, search)
    if not speculative["ngram_size"]:
        return
    if config.model_type == "gpt2":  # the peer's gpt2 state is not its decoder-only one
        raise GentwinError("Speculative decoding requires a plain decoder-only target state.")
    if search["batch_size"] != 1:
        raise GentwinError("N-gram decoding requires batch_size=1 in this release.")
    if search["num_beams"] != 1:
        raise GentwinError("N-gram decoding does not support beam search in this release.")
    if search["num_return_sequences"] != 1:
        raise GentwinError("N-gram decoding requires num_return_sequences=1 in this release.")
    decoder = config.decoder
    if decoder.conv_layers or config.encoder:
        raise GentwinError("N-gram decoding requires a plain decoder-only text model in this release.")
    if any(decoder.layer_kind(layer) == WINDOWED_KV_LAYER for layer in decoder.attention_layers):
        raise GentwinError("N-gram decoding requires a rewindable KV cache; sliding-window, hybrid, and "
                           "model-managed state are not supported in this release.")
    if prunes_logits:
        raise GentwinError("N-gram decoding requires target logits for every verified token; pruned last-token-only "
                           "logits are not supported in this release.")


def _check_draft_model(speculative: dict, search: dict) -> None:
    if speculative["ngram_size"]:
        raise GentwinError("N-gram decoding cannot be combined with draft-model speculative decoding.")
    if search["batch_size"] != 1:
        raise GentwinError(f"Speculative decoding does not support batch_size > 1 in this release. "
                           f"Got batch_size={search['batch_size']}")
    if search["num_beams"] != 1:
        raise GentwinError(f"Speculative decoding does not support num_beams > 1 (beam search). "
                           f"Got num_beams={search['num_beams']}.")
    if search["no_repeat_ngram_size"]:
        raise GentwinError(f"Speculative decoding does not support no_repeat_ngram_size != 0 in this release. "
                           f"Got no_repeat_ngram_size={search['no_repeat_ngram_size']}.")
    if search["do_sample"]:
        # The peer accepts draft tokens by rejection sampling (min(1, p_target / p_draft)) with its own random
        # stream; gentwin draws every token as it does without drafts, which that rule does not give.
        raise GentwinError("gentwin: a draft model drafts for greedy search only (do_sample=False); the peer's "
                           "rejection sampling of draft tokens is not implemented")


def check_draft_model(config, draft_config) -> None:
    """The peer's checks of a target and its draft when the model is loaded."""
    for what, checked in (("target", config), ("draft", draft_config)):
        decoder = checked.decoder
        if decoder.conv_layers or any(decoder.layer_kind(layer) == WINDOWED_KV_LAYER
                                      for layer in decoder.attention_layers):
            raise ConfigError(f"Speculative decoding requires a rewindable KV cache in the {what} model: "
                              "sliding-window and hybrid state are not supported.")


class NGramLookup:
    """The committed tokens, and for each run of N - 1 of them where it last occurred with a token after it.

    A draft is what followed the last occurrence of the sequence's final N - 1 tokens: up to K tokens copied
    from there, or with chained lookup one token at a time, each found again after the N - 1 tokens it ends.
    """

    def __init__(self, ngram_size: int):
        self.key_length = ngram_size - 1
        self.history: list[int] = []
        self.last_start: dict[tuple, int] = {}  # N - 1 tokens -> where they last began, with a token after them

    def append(self, tokens) -> None:
        for token in tokens:
            self.history.append(int(token))
            start = len(self.history) - self.key_length - 1
            if start >= 0:
                self.last_start[tuple(self.history[start : start + self.key_length])] = start

    def reset(self, tokens=()) -> None:
        self.history, self.last_start = [], {}
        self.append(tokens)

    def propose(self, k: int, chained: bool) -> list[int]:
        if len(self.history) < self.key_length:
            return []
        key = tuple(self.history[len(self.history) - self.key_length :])
        if key not in self.last_start:
            return []
        if not chained:
            after = self.last_start[key] + self.key_length
            return self.history[after : after + k]
        draft = []
        while key in self.last_start and len(draft) < k:
            draft.append(self.history[self.last_start[key] + self.key_length])
            key = (*key[1:], draft[-1])
        return draft


class AdaptiveK:
    """The peer's adaptive draft length: from min_adaptive_k, probe one more or one fewer by acceptance, and
    keep the probe by measured tokens per millisecond (exponentially weighted, 25% per round). With
    min_adaptive_k 0 the width is max_draft_tokens, fixed."""

    ALPHA, HIGH, LOW, KEEP, SEVERE = 0.25, 0.75, 0.50, 0.97, 0.80
    MIN_SAMPLES, PROBE_SAMPLES, COOLDOWN_KEPT, COOLDOWN_REJECTED = 2, 2, 1, 6

    def __init__(self, max_draft_tokens: int, min_adaptive_k: int):
        self.enabled = min_adaptive_k > 0
        self.min_k = min_adaptive_k if self.enabled else max_draft_tokens
        self.max_k = MAX_DRAFT_TOKENS if self.enabled else max_draft_tokens
        self.increases = self.decreases = self.observations = self.probes = 0
        self.reset()

    def reset(self) -> None:
        self.k = self.min_k
        self.estimates: dict[int, list] = {}  # k -> [tokens, milliseconds, acceptance, samples]
        self.probe_origin = self.probe_rounds = self.stable_rounds = self.wait = 0

    def throughput(self, k: int) -> float:
        tokens, milliseconds = self.estimates.get(k, [0.0, 0.0, 0.0, 0])[:2]
        return tokens / milliseconds if milliseconds > 0 else 0.0

    def current_throughput(self) -> float:
        if self.k in self.estimates:
            return self.throughput(self.k)
        return self.throughput(self.probe_origin) if self.probe_origin else 0.0

    def record(self, k: int, evaluated: int, accepted: int, emitted: int, filled: bool, milliseconds: float) -> None:
        if not self.enabled or k != self.k or evaluated <= 0 or not emitted or not filled or milliseconds <= 0:
            return
        estimate = self.estimates.setdefault(k, [emitted, milliseconds, accepted / evaluated, 0])
        if estimate[3]:
            for index, sample in enumerate((emitted, milliseconds, accepted / evaluated)):
                estimate[index] += self.ALPHA * (sample - estimate[index])
        estimate[3] += 1
        self.observations += 1
        if self.probe_origin:
            self._judge_probe(estimate)
            return
        self.stable_rounds += 1
        if self.wait:
            self.wait -= 1
        elif estimate[3] >= self.MIN_SAMPLES:
            if estimate[2] < self.LOW and self.k > self.min_k:
                self._start_probe(self.k - 1)
            elif estimate[2] >= self.HIGH and self.k < self.max_k and self.stable_rounds >= self.MIN_SAMPLES:
                self._start_probe(self.k + 1)

    def _judge_probe(self, estimate: list) -> None:
        self.probe_rounds += 1
        origin = self.throughput(self.probe_origin)
        if origin > 0 and self.throughput(self.k) < origin * self.SEVERE:
            self._finish_probe(keep=False)
        elif self.probe_rounds >= self.PROBE_SAMPLES:
            fast_enough = origin <= 0 or self.throughput(self.k) >= origin * self.KEEP
            accepting = self.k < self.probe_origin or estimate[2] >= self.HIGH
            self._finish_probe(keep=fast_enough and accepting)

    def _move(self, k: int) -> None:
        self.increases += k > self.k
        self.decreases += k < self.k
        self.k = k

    def _start_probe(self, k: int) -> None:
        self.probe_origin, self.probe_rounds, self.stable_rounds = self.k, 0, 0
        self.probes += 1
        self._move(k)

    def _finish_probe(self, keep: bool) -> None:
        if not keep:
            self._move(self.probe_origin)
        self.probe_origin = self.probe_rounds = self.stable_rounds = 0
        self.wait = self.COOLDOWN_KEPT if keep else self.COOLDOWN_REJECTED


class Cooldown:
    """With `cooldown`, three completed rounds in a row at the minimum width that accept nothing buy one
    ordinary decoding step."""

    ZERO_ACCEPT_ROUNDS = 3

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.streak = self.remaining = self.entries = self.steps = 0

    def record(self, k: int, minimum_k: int, evaluated: int, accepted: int) -> None:
        if not self.enabled or evaluated <= 0:
            return
        if accepted or k != minimum_k:
            self.streak = 0
            return
        self.streak += 1
        if self.streak == self.ZERO_ACCEPT_ROUNDS:
            self.streak, self.remaining = 0, 1
            self.entries += 1

    def take_step(self) -> None:
        self.remaining -= 1
        self.steps += 1

    def reset(self) -> None:
        self.streak = self.remaining = 0


class Stats:
    """The counters behind get_speculative_stats, as the peer keeps them (see `as_peer_dict`)."""

    COUNTERS = ("rounds", "completed_rounds", "interrupted_rounds", "draft_tokens_proposed", "draft_tokens_evaluated",
                "draft_tokens_accepted", "correction_tokens", "bonus_tokens", "tokens_queued", "tokens_emitted",
                "tokens_discarded", "target_forward_passes", "standard_fallback_steps", "full_accept_rounds",
                "partial_accept_rounds", "zero_accept_rounds", "target_verify_forward_passes",
                "ngram_lookup_hits", "ngram_lookup_misses", "ngram_lookup_tokens_proposed",
                "ngram_chained_tokens_proposed", "ngram_history_syncs", "ngram_history_tokens_synced")
    TIMERS = ("draft_ms", "verify_ms", "history_sync_ms", "lookup_ms")

    def __init__(self):
        for name in self.COUNTERS:
            setattr(self, name, 0)
        for name in self.TIMERS:
            setattr(self, name, 0.0)
        self.rounds_by_k: dict[int, int] = {}
        self.draft_forward_passes = 0  # runs of a draft model

    def as_peer_dict(self, active: bool, buffered: int, adaptive: AdaptiveK, cooldown: Cooldown) -> dict:
        """get_speculative_stats' dict, key for key the peer's. Re-anchor and reconciliation runs are 0: the
        token a round ends with goes into the next run of the target, whatever that run is."""
        acceptance = self.draft_tokens_accepted / self.draft_tokens_evaluated if self.draft_tokens_evaluated else 0.0
        expected = 0.0
        if self.rounds and self.draft_tokens_evaluated:
            expected = sum(count * sum(acceptance**i for i in range(k + 1))
                           for k, count in self.rounds_by_k.items()) / self.rounds
        per_round = (lambda value: value / self.rounds if self.rounds else 0.0)
        counts = {name: getattr(self, name) for name in self.COUNTERS}
        return {
            **{name: counts[name] for name in self.COUNTERS[:3]}, "active_rounds": int(active),
            **{name: counts[name] for name in self.COUNTERS[3:11]}, "tokens_buffered": buffered,
            "draft_forward_passes": self.draft_forward_passes, "target_forward_passes": self.target_forward_passes,
            "effective_k": adaptive.k, "adaptive_k_increases": adaptive.increases,
            "adaptive_k_decreases": adaptive.decreases, "adaptive_k_observations": adaptive.observations,
            "adaptive_k_probes": adaptive.probes, "cooldown_entries": cooldown.entries,
            "cooldown_steps": cooldown.steps, "cooldown_remaining": cooldown.remaining,
            "standard_fallback_steps": self.standard_fallback_steps, "mtp_failures": 0, "dflash2_failures": 0,
            "dflash2_disables": 0, "dflash2_admission_misses": 0,
            **{name: counts[name] for name in self.COUNTERS[13:17]},
            "target_reanchor_forward_passes": 0, "target_reconciliation_forward_passes": 0,
            **{name: counts[name] for name in self.COUNTERS[17:21]}, "ngram_grammar_candidate_rejections": 0,
            "ngram_history_syncs": self.ngram_history_syncs,
            "ngram_history_tokens_synced": self.ngram_history_tokens_synced,
            "formula_supported": self.rounds > 0, "total_draft_ms": self.draft_ms, "total_target_ms": self.verify_ms,
            "total_reconciliation_ms": 0.0, "total_target_verify_ms": self.verify_ms, "total_target_reanchor_ms": 0.0,
            "total_ngram_history_sync_ms": self.history_sync_ms, "total_ngram_lookup_ms": self.lookup_ms,
            "avg_draft_ms_per_token": self.draft_ms / self.draft_tokens_proposed if self.draft_tokens_proposed else 0.0,
            "acceptance_rate": acceptance,
            "avg_draft_tokens_per_round": per_round(self.draft_tokens_proposed),
            "mean_emitted_tokens_per_round": per_round(self.tokens_emitted),
            "expected_tokens_per_round": expected, "avg_target_ms_per_round": per_round(self.verify_ms),
            # No single-token re-anchor runs to measure a baseline on, so the formula's estimates stay 0.
            "target_baseline_ms_per_token": 0.0, "target_overhead_ratio": 0.0, "estimated_speedup": 0.0,
            "observed_speedup": 0.0, "adaptive_k_throughput": adaptive.current_throughput(),
            # The peer's histogram is for its multi-token-prediction drafters; n-gram rounds leave it at zeros.
            "acceptance_length_histogram": [0] * 8,
        }


def milliseconds_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
