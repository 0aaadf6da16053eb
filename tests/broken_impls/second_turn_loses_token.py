"""The second chat turn loses a token: the first append after the prompt drops its last token."""

from tests.broken_impls import BASE, base_attribute as __getattr__  # noqa: F401


class Generator(BASE.Generator):
    appends = 0

    def append_tokens(self, tokens) -> None:
        self.appends += 1
        if self.appends == 2 and len(tokens[0]) > 1:
            tokens = [list(tokens[0])[:-1]]
        super().append_tokens(tokens)
