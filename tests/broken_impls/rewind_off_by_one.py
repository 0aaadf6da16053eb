"""rewind_to(n) off by one: it keeps n - 1 tokens."""

from tests.broken_impls import BASE, base_attribute as __getattr__  # noqa: F401


class Generator(BASE.Generator):
    def rewind_to(self, length: int) -> None:
        super().rewind_to(max(length - 1, 0))
