"""What chat() returns and chat_stream() yields, in the shapes of Cohere's API.

chat_stream() yields Cohere v2's stream events as the JSON objects its server sends (gentwin serve sends them
as they are): message-start, content-start, content-delta (one per piece of text), content-end, message-end
(finish reason and usage). ChatResponse renders itself as v2 chat's and v1 generate's response bodies.
"""

from __future__ import annotations

import dataclasses
import uuid

API_VERSION = {"api_version": {"version": "1"}}  # the "meta" every Cohere response body carries


def new_id() -> str:
    return str(uuid.uuid4())


@dataclasses.dataclass(frozen=True)
class Usage:
    """Tokens in and out, and how many of the prompt's came from the prefix cache instead of running. Billed
    and counted units are the same here: every token is one."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0

    def to_json(self) -> dict:
        counts = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        return {"billed_units": dict(counts), "tokens": dict(counts), "cached_tokens": self.cached_tokens}


@dataclasses.dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str
    token_ids: tuple[int, ...]  # every token generated, see gentwin.chat.reply


@dataclasses.dataclass(frozen=True)
class ChatResponse:
    id: str
    generations: tuple[Generation, ...]  # one per num_generations
    usage: Usage

    @property
    def text(self) -> str:
        return self.generations[0].text

    @property
    def finish_reason(self) -> str:
        return self.generations[0].finish_reason

    def to_v2_json(self) -> dict:
        """The body of Cohere's POST /v2/chat response (first generation)."""
        return {"id": self.id, "finish_reason": self.finish_reason,
                "message": {"role": "assistant", "content": [{"type": "text", "text": self.text}]},
                "usage": self.usage.to_json()}

    def to_v1_generate_json(self) -> dict:
        """The body of Cohere's POST /v1/generate response."""
        generations = [{"id": new_id(), "index": index, "text": generation.text,
                        "finish_reason": generation.finish_reason}
                       for index, generation in enumerate(self.generations)]
        return {"id": self.id, "generations": generations,
                "meta": {**API_VERSION, **self.usage.to_json()}}


def message_start(response_id: str) -> dict:
    return {"type": "message-start", "id": response_id, "delta": {"message": {"role": "assistant"}}}


def content_start() -> dict:
    return {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}}


def content_delta(text: str) -> dict:
    return {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": text}}}}


def content_end() -> dict:
    return {"type": "content-end", "index": 0}


def message_end(finish_reason: str, usage: Usage) -> dict:
    return {"type": "message-end", "delta": {"finish_reason": finish_reason, "usage": usage.to_json()}}
