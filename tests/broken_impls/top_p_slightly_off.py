"""top_p slightly off: the nucleus is cut at 97% of the probability asked for."""

from tests.broken_impls import base_attribute as __getattr__, with_changed_options  # noqa: F401

Generator = with_changed_options(lambda options: {"top_p": 0.97 * options["top_p"]})
