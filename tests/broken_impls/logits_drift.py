"""Logits drift after a dozen steps: from the 13th generate_next_token on, every logit moves by a little
more each step (1e-3 per step, alternating in sign along the vocabulary), as an accumulating numerical error
would move them. get_logits shows the drift, and the tokens are chosen from the drifted logits."""

import numpy as np

from tests.broken_impls import BASE, base_attribute as __getattr__  # noqa: F401

HONEST_STEPS = 12
DRIFT_PER_STEP = 1e-3


class Generator(BASE.Generator):
    steps = 0

    def drift(self, shape) -> np.ndarray:
        steps_drifted = max(0, self.steps - HONEST_STEPS + 1)
        signs = np.where(np.arange(shape[-1]) % 2 == 0, 1.0, -1.0)  # [vocab]
        return (DRIFT_PER_STEP * steps_drifted * signs).astype(np.float32)

    def get_logits(self) -> np.ndarray:
        logits = super().get_logits()  # [rows, 1, vocab]
        return logits + self.drift(logits.shape)

    def generate_next_token(self) -> None:
        if self.steps >= HONEST_STEPS:
            self.set_logits(self.get_logits())
        super().generate_next_token()
        self.steps += 1
