"""Speculative decoding (n-gram or draft-model drafts) as gentwin/reference/speculative.py does it, with the
verify run's rows read where onnxruntime wrote them: in the generator's logits buffer, on the host or (CUDA)
on the GPU, where the search then reads them. The rows are copied out, as the next run writes that buffer
again."""

from __future__ import annotations

import numpy as np

from gentwin.fast.device import array_module
from gentwin.reference import speculative as reference_speculative


class Speculation(reference_speculative.Speculation):
    def verify_rows(self, state, graph, tokens: np.ndarray):
        """The target's logits after each of TOKENS [1, S], [S, V] float32, where the state's logits live."""
        if not graph.takes_chunks_over_past:
            return super().verify_rows(state, graph, tokens)
        state.run(tokens)
        return self.checked_rows(state.logits, tokens)[0].astype(np.float32)            # [S, V]

    @staticmethod
    def concatenate(arrays):
        return array_module(arrays[0]).concatenate(arrays)
