"""top_k off by one: sampling keeps the k + 1 best tokens."""

from tests.broken_impls import base_attribute as __getattr__, with_changed_options  # noqa: F401

Generator = with_changed_options(lambda options: {"top_k": options["top_k"] + 1} if options["top_k"] > 0 else {})
