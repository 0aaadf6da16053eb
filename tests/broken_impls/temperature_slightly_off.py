"""temperature slightly off: 3% too hot."""

from tests.broken_impls import base_attribute as __getattr__, with_changed_options  # noqa: F401

Generator = with_changed_options(lambda options: {"temperature": 1.03 * options["temperature"]})
