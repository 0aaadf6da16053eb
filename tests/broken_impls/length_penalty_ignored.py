"""length_penalty ignored: beam hypotheses are scored by their plain sum of log-probabilities."""

from tests.broken_impls import base_attribute as __getattr__, with_changed_options  # noqa: F401

Generator = with_changed_options(lambda options: {"length_penalty": 1.0})
