"""random_seed ignored: every Generator draws from fresh entropy."""

from tests.broken_impls import base_attribute as __getattr__, with_changed_options  # noqa: F401

Generator = with_changed_options(lambda options: {"random_seed": -1})
