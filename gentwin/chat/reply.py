"""One reply: the generate loop of onnxruntime-genai's API, with Cohere's ways to end it.

A Reply takes a Generator whose prompt is appended, and iterates over the reply's text as it becomes safe to
show (gentwin.chat.stops holds back what a stop sequence may still cut). It ends, setting `finish_reason`
as Cohere's APIs name it, at the first of:
- COMPLETE: the model generated an end-of-sequence token (not part of the text);
- STOP_SEQUENCE: the text reached a stop or end sequence;
- MAX_TOKENS: max_tokens tokens were generated, or the sequence filled the model's context.

`token_ids` are every token the model generated for the reply, the end-of-sequence token and the tokens past
a stop sequence included: they are what usage counts as output tokens.
"""

from __future__ import annotations

from collections.abc import Iterator

from gentwin.chat.stops import StopMatcher

COMPLETE = "COMPLETE"
STOP_SEQUENCE = "STOP_SEQUENCE"
MAX_TOKENS = "MAX_TOKENS"


class Reply:
    def __init__(self, generator, tokenizer, max_tokens: int | None, matcher: StopMatcher):
        self.generator, self.tokenizer = generator, tokenizer
        self.max_tokens, self.matcher = max_tokens, matcher
        self.eos_token_ids = set(generator.model.config.eos_token_ids)
        self.token_ids: list[int] = []
        self.text = ""
        self.finish_reason: str | None = None

    def __iter__(self) -> Iterator[str]:
        stream = self.tokenizer.create_stream()
        while True:
            if len(self.token_ids) == self.max_tokens or self.generator.is_done():
                self.finish_reason = MAX_TOKENS
                break
            self.generator.generate_next_token()
            token = int(self.generator.get_next_tokens()[0])
            self.token_ids.append(token)
            if token in self.eos_token_ids:
                self.finish_reason = COMPLETE
                break
            text, stopped = self.matcher.feed(stream.decode(token))
            yield from self._show(text)
            if stopped:
                self.finish_reason = STOP_SEQUENCE
                return
        yield from self._show(self.matcher.flush())  # no sequence came: what was held back is text after all

    def _show(self, text: str) -> Iterator[str]:
        if text:
            self.text += text
            yield text
