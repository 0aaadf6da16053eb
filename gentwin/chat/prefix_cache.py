"""A prefix cache shared by all conversations: snapshots of prefilled generators, keyed by their tokens.

A chat prompt is the whole conversation rendered by the chat template, so consecutive turns of one
conversation, and different conversations with the same system prompt, begin with the same tokens. gentwin.chat
keeps Generator snapshots (gentwin's extension of the API, gentwin.api.Generator.snapshot) of such beginnings:
where a system prompt ends, and where each reply ends. A new prompt restores the snapshot sharing the most
leading tokens with it, rewinds it to what they share, and appends only the rest.

Bounded by the number of snapshots and by the tokens they hold together (their KV cache's size grows with
it); the least recently used go first. Thread-safe: snapshots never change once made, so a lookup hands one
out while others use it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens the 1-D arrays A and B share."""
    length = min(len(a), len(b))
    differ = np.flatnonzero(a[:length] != b[:length])
    return int(differ[0]) if differ.size else length


class PrefixCache:
    def __init__(self, max_entries: int, max_tokens: int):
        self.max_entries, self.max_tokens = max_entries, max_tokens
        self._entries: OrderedDict[bytes, object] = OrderedDict()  # tokens' bytes -> snapshot, least recent first
        self._tokens = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    @property
    def tokens(self) -> int:
        return self._tokens

    def lookup(self, tokens: np.ndarray) -> tuple[int, object | None]:
        """(how many leading TOKENS the best snapshot shares, that snapshot), or (0, None)."""
        with self._lock:
            best_length, best_key = 0, None
            for key, snapshot in self._entries.items():
                length = common_prefix_length(snapshot.tokens, tokens)
                if length > best_length:
                    best_length, best_key = length, key
            if best_key is None:
                return 0, None
            self._entries.move_to_end(best_key)
            return best_length, self._entries[best_key]

    def keep(self, generator) -> None:
        """Keep a snapshot of GENERATOR (its tokens are its key), dropping the least recently used beyond the
        bounds. The snapshot is taken only when it is to be kept: none when the cache is off, when the tokens
        are too many, or when they are cached already (that entry becomes the most recent)."""
        if not self.enabled:
            return
        tokens = generator.get_sequence(0)
        size = len(tokens)
        if size == 0 or size > self.max_tokens:
            return
        key = tokens.astype(np.int32).tobytes()
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
        snapshot = generator.snapshot()  # outside the lock: copying a KV cache must not hold up other chats
        with self._lock:
            if key in self._entries:  # another chat kept the same tokens meanwhile
                return
            self._entries[key] = snapshot
            self._tokens += size
            while len(self._entries) > self.max_entries or self._tokens > self.max_tokens:
                _, dropped = self._entries.popitem(last=False)
                self._tokens -= len(dropped.tokens)
