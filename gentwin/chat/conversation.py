"""A live conversation: onnxruntime-genai 0.6.0's chat mode, with undo.

One Generator holds the whole conversation. The system prompt is appended once, when the conversation starts
(0.6.0's system prompt caching). Each turn renders the conversation with the chat template and appends only
what the generator does not hold yet: the earlier turns and the last reply stay, as far as they render to the
tokens the generator holds. undo() and reset() rewind the generator (Generator.rewind_to): nothing runs again.

The options are set when the conversation starts, and sampling goes on from turn to turn with one random
number generator, as in the 0.6.0 chat loop. `gentwin chat` is this class in a terminal.
"""

from __future__ import annotations

from collections.abc import Iterator

from gentwin.chat import prompts
from gentwin.chat.options import Options
from gentwin.chat.prefix_cache import common_prefix_length
from gentwin.chat.reply import Reply
from gentwin.chat.stops import StopMatcher
from gentwin.errors import GentwinError


class Conversation:
    def __init__(self, client, system: str | None, options: Options):
        """Made by gentwin.chat.Client.conversation."""
        if options.num_generations != 1:
            raise ValueError("a conversation has one reply per turn: num_generations must be 1")
        self.client, self.options = client, options
        self.system = [] if system is None else prompts.chat_messages([{"role": "system", "content": system}])
        self.messages = list(self.system)
        self.turn_starts: list[int] = []  # per turn, the length the generator was rewound to before it
        self.finish_reason: str | None = None  # the last reply's
        self.generator = client.new_generator(options, 0)
        if self.system:
            self.generator.append_tokens(prompts.render(client.tokenizer, self.system, add_generation_prompt=False))

    def say(self, text: str) -> Iterator[str]:
        """The reply to TEXT, streamed. The turn joins the conversation when the reply has been read to its end."""
        messages = prompts.chat_messages(self.messages + [{"role": "user", "content": text}])
        prompt = self.client.truncate(prompts.render(self.client.tokenizer, messages), "NONE")
        # Keep what the generator holds of the prompt; the prompt's last token runs anyway, as in Client.
        start = min(common_prefix_length(self.generator.get_sequence(0), prompt), len(prompt) - 1)
        self.generator.rewind_to(start)
        self.generator.append_tokens(prompt[start:])
        reply = Reply(self.generator, self.client.tokenizer, self.options.max_tokens,
                      StopMatcher(self.client.chat_stop_sequences(self.options)))
        yield from reply
        self.turn_starts.append(start)
        self.messages = messages + [{"role": "assistant", "content": reply.text}]
        self.finish_reason = reply.finish_reason

    def undo(self) -> None:
        """Forget the last turn: the generator rewinds to where that turn began."""
        if not self.turn_starts:
            raise GentwinError("nothing to undo: the conversation has no turn yet")
        self._rewind(self.turn_starts.pop())
        del self.messages[-2:]

    def reset(self) -> None:
        """Forget every turn; the system prompt stays."""
        if self.turn_starts:
            self._rewind(self.turn_starts[0])
        self.turn_starts.clear()
        self.messages = list(self.system)

    def _rewind(self, length: int) -> None:
        # A template may render an earlier turn differently once more follow, so a turn can begin before the
        # one preceding it: then the generator already holds less than LENGTH, all of it still good.
        self.generator.rewind_to(min(length, self.generator.token_count()))
