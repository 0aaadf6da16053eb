"""min_length ignored: EOS may come at any length."""

from tests.broken_impls import base_attribute as __getattr__, with_changed_options  # noqa: F401

Generator = with_changed_options(lambda options: {"min_length": 0})
