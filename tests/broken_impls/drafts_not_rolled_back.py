"""A speculative round that ends without rolling the KV cache back: the positions of rejected drafts stay, and
every later token attends to them. Only a scenario that drafts (the speculative family) can see it."""

from gentwin.fast import speculative
from tests.broken_impls import BASE, base_attribute as __getattr__  # noqa: F401


class Speculation(speculative.Speculation):
    def end(self, generator, interrupted: bool = False) -> None:
        state = generator.state
        state.rewind = lambda length: None  # the instance's rewind, for this one call
        try:
            super().end(generator, interrupted)
        finally:
            del state.rewind


class Model(BASE.Model):
    Speculation = Speculation
