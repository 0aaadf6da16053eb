"""repetition_penalty ignored."""

from tests.broken_impls import base_attribute as __getattr__, with_changed_options  # noqa: F401

Generator = with_changed_options(lambda options: {"repetition_penalty": 1.0})
