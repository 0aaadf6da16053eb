"""Stop and end sequences in streamed text, and the holdback that keeps a stream from showing what gets cut.

Cohere's APIs cut the text in two ways, and gentwin follows both:
- excluded: the text ends where the sequence begins (Chat's `stop_sequences`, "not including the stop
  sequence"; Generate's `end_sequences`, "the sequence will be excluded from the text");
- included: the text ends where the sequence ends (Generate's `stop_sequences`, "the sequence will be included
  the text").

Generation stops at the first token that completes a sequence. Where one token completes several, the
text is cut as if it had been generated a character at a time: at the sequence that completes first, and of
those completing at the same character, the one that starts first. So the cut does not depend on how the text
happens to be split into tokens.

A stream must never show text that later turns out to be cut, so the matcher holds back the longest end of the
text that could still grow into an excluded sequence, until the next pieces tell. (Text that could become an
included sequence is not held back: it stays in the text either way.)
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, excluded: tuple[str, ...] = (), included: tuple[str, ...] = ()):
        self.sequences = [(sequence, False) for sequence in excluded] + [(sequence, True) for sequence in included]
        self.excluded = excluded
        # Text already released, as far back as a sequence completing now could have started.
        self.context_size = max((len(sequence) for sequence, _ in self.sequences), default=1) - 1
        self.released_tail = ""
        self.held = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add the text of one more token. Returns (text now safe to show, whether a sequence ended the text)."""
        window = self.released_tail + self.held + piece
        start_of_new = len(self.released_tail)
        cut = self._first_cut(window)
        if cut is not None:
            self.held = ""
            return window[start_of_new:cut], True
        keep = self._holdback(window)
        release_end = len(window) - keep
        released = window[start_of_new:release_end]
        self.held = window[release_end:]
        if self.context_size:
            self.released_tail = window[:release_end][-self.context_size:]
        return released, False

    def flush(self) -> str:
        """Generation ended without a sequence: what was held back is text after all."""
        held, self.held = self.held, ""
        return held

    def _first_cut(self, window: str) -> int | None:
        """Where the text ends if a sequence occurs in WINDOW: the end of an included sequence or the start of
        an excluded one, for the occurrence that completes first (then starts first)."""
        occurrences = []
        for sequence, included in self.sequences:
            start = window.find(sequence)
            if start >= 0:
                end = start + len(sequence)
                occurrences.append((end, start, end if included else start))
        return min(occurrences)[2] if occurrences else None

    def _holdback(self, window: str) -> int:
        """Length of the longest end of WINDOW that is a proper beginning of an excluded sequence."""
        longest = 0
        for sequence in self.excluded:
            for length in range(min(len(sequence) - 1, len(window)), longest, -1):
                if window.endswith(sequence[:length]):
                    longest = length
                    break
        return longest
