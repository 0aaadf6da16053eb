"""From messages to prompt tokens: roles, the model's chat template, and truncation.

Messages are Cohere's (and OpenAI's): `{"role": "system" | "user" | "assistant", "content": ...}`, the content a
string or a list of text blocks `{"type": "text", "text": ...}`. They are rendered by the model folder's chat
template with a generation prompt (Tokenizer.apply_chat_template), then encoded.
"""

from __future__ import annotations

import json
import os
import reprlib

import numpy as np

from gentwin.errors import GentwinError

ROLES = ("system", "user", "assistant")


class PromptTooLongError(GentwinError, ValueError):
    """The prompt does not fit the model's context and truncate is NONE."""


def chat_messages(messages) -> list[dict]:
    """MESSAGES checked, each as {"role", "content": str}."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
        raise TypeError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty")
    return [_chat_message(index, message) for index, message in enumerate(messages)]


def _chat_message(index: int, message) -> dict:
    if not isinstance(message, dict):
        raise TypeError(f"messages[{index}] must be a dict with 'role' and 'content', got {type(message).__name__}")
    extra = sorted(set(message) - {"role", "content"})
    if extra:
        raise ValueError(f"messages[{index}] has {extra[0]!r}: gentwin.chat messages have only 'role' and 'content'")
    role = message.get("role")
    if role not in ROLES:
        raise ValueError(f"messages[{index}]['role'] must be one of {', '.join(ROLES)}, got {reprlib.repr(role)}")
    if "content" not in message:
        raise ValueError(f"messages[{index}] has no 'content'")
    return {"role": role, "content": _text(index, message["content"])}


def _text(index: int, content) -> str:
    """A message's content: a string, or text blocks joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(block, dict) and block.get("type") == "text"
                                         and isinstance(block.get("text"), str) for block in content):
        return "".join(block["text"] for block in content)
    raise ValueError(f"messages[{index}]['content'] must be a string or a list of "
                     f"{{'type': 'text', 'text': str}} blocks, got a {type(content).__name__}")


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = True,
           max_characters: int | None = None) -> np.ndarray:
    """The token ids of MESSAGES as the chat template renders them, int32 [n]; the text is refused before it is
    encoded if it has more than MAX_CHARACTERS (see encode)."""
    text = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=add_generation_prompt)
    return encode(tokenizer, text, max_characters)


def encode(tokenizer, text: str, max_characters: int | None = None) -> np.ndarray:
    """The token ids of TEXT, int32 [n], refused before encoding if it has more than MAX_CHARACTERS: encoding
    costs time and memory in proportion to the text, so a text too long for the context is refused by its
    length (see longest_token_characters)."""
    if max_characters is not None and len(text) > max_characters:
        raise PromptTooLongError(f"the prompt has {len(text)} characters, more than the {max_characters} that "
                                 f"the model's context can hold; shorten it, or pass truncate='START' or 'END'")
    return tokenizer.encode(text)


def longest_token_characters(model_dir) -> int:
    """The most characters of text one token can stand for: the longest string in the vocabulary of the folder's
    tokenizer.json, added tokens included. A byte-level vocabulary spells each byte as one character, and a text
    character is one byte at least; a SentencePiece one spells a space as one character ("\u2581"), a byte
    as six ("<0x41>"). So a text of more than N times this many characters encodes to more than N tokens (for
    tokenizers whose normalizer does not shorten text: none, or SentencePiece's, in every folder gentwin knows)."""
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as file:
        tokenizer_json = json.load(file)
    vocabulary = tokenizer_json["model"]["vocab"]
    pieces = vocabulary if isinstance(vocabulary, dict) else [piece for piece, _score in vocabulary]  # Unigram
    return max(len(piece) for piece in [*pieces, *(token["content"] for token in tokenizer_json["added_tokens"])])


def system_prompt_length(tokenizer, messages: list[dict], prompt: np.ndarray) -> int | None:
    """How many leading tokens of PROMPT are the leading system messages, rendered alone; None when they do
    not render to a proper beginning of the prompt (no system message, or a template that renders it
    differently alone)."""
    leading = []
    for message in messages:
        if message["role"] != "system":
            break
        leading.append(message)
    if not leading:
        return None
    system = render(tokenizer, leading, add_generation_prompt=False)
    if 0 < len(system) < len(prompt) and np.array_equal(prompt[: len(system)], system):
        return len(system)
    return None


def truncate(prompt: np.ndarray, mode: str, limit: int) -> np.ndarray:
    """PROMPT cut to LIMIT tokens as Cohere's truncate says: START drops its beginning, END its end, NONE raises."""
    if len(prompt) <= limit:
        return prompt
    if mode == "NONE":
        raise PromptTooLongError(f"the prompt has {len(prompt)} tokens, more than the {limit} the model's context "
                                 f"leaves for it; shorten it, or pass truncate='START' or 'END'")
    return prompt[len(prompt) - limit:] if mode == "START" else prompt[:limit]
