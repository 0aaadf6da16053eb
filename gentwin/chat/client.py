"""gentwin.chat.Client: Cohere's chat() and generate() over a model folder, on either gentwin engine.

    from gentwin.chat import Client

    client = Client("fixtures/models/llama-fp32", engine="reference")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    response = client.chat(messages, max_tokens=20, temperature=0)
    print(response.text, response.finish_reason, response.usage)
    for event in client.chat_stream(messages, max_tokens=20, stop_sequences=["\\n"]):
        print(event["type"])

A call runs in three steps:
1. prepare, before anything runs, so that bad input raises before a stream starts: the options (a preset's,
   then the call's), the messages rendered by the chat template and encoded, the prompt truncated to the
   context, and the first Generator made (its constructor checks the search options);
2. prefill: the prefix cache's snapshot sharing the most leading tokens with the prompt is restored and rewound
   to what they share; the rest is appended, and where the system prompt ends a snapshot goes to the cache,
   so that the next conversations with that system prompt restore it instead of running it again;
3. generations: the first continues the prefilled generator, the others restore its snapshot (one prefill for
   all, each with its own seed, see gentwin.chat.options). Each is a Reply (gentwin.chat.reply); its end state
   goes to the prefix cache, so that the conversation's next turn, whose prompt begins with this one and its
   reply, appends only the new turn's tokens (onnxruntime-genai 0.6.0's chat mode, for a stateless API).

Streams are the same with and without the cache: a restored generator is where a fresh one would be after
appending the same tokens, and each call's generators are made fresh with the call's own seeds.

The engine is the module gentwin.<engine> ("fast", the default, or "reference"): onnxruntime-genai's API plus
gentwin's Generator.snapshot/restore. Thread-safe: a call runs on its own Generators; the Model, the Tokenizer
and the prefix cache are shared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import reprlib
import threading
import warnings
from collections.abc import Iterator

import numpy as np

from gentwin.chat import prompts, responses
from gentwin.chat.conversation import Conversation
from gentwin.chat.options import CHAT_DEFAULTS, GENERATE_DEFAULTS, OPTION_NAMES, Options, resolve
from gentwin.chat.prefix_cache import PrefixCache
from gentwin.chat.presets import PROMPT, PresetStore
from gentwin.chat.reply import Reply
from gentwin.chat.stops import StopMatcher
from gentwin.errors import GentwinError

ENGINES = ("fast", "reference")
DEFAULT_ENGINE = "fast"
DEFAULT_CACHE_ENTRIES = 16
CACHE_CONTEXTS = 8  # default bound on the prefix cache's tokens, in context lengths


def load_engine(engine: str):
    """The module gentwin.ENGINE."""
    if engine not in ENGINES:
        raise GentwinError(f"unknown engine {engine!r}; the engines are {', '.join(ENGINES)}")
    return importlib.import_module(f"gentwin.{engine}")


@dataclasses.dataclass
class _Call:
    """A checked call, nothing run yet."""

    prompt: np.ndarray                    # [n] int32, truncated
    options: Options
    excluded: tuple[str, ...]             # sequences cut with the text before them
    included: tuple[str, ...]             # sequences cut with the text up to their end
    system_prompt_length: int | None      # where to snapshot the prefill for the prefix cache
    first_generator: object
    cached_tokens: int = 0                # prompt tokens restored from the prefix cache, once prefilled

    def usage(self, output_tokens: int) -> responses.Usage:
        return responses.Usage(len(self.prompt), output_tokens, self.cached_tokens)

    def matcher(self) -> StopMatcher:
        return StopMatcher(self.excluded, self.included)


class Client:
    def __init__(self, model_dir, engine: str = DEFAULT_ENGINE, *, presets=None,
                 cache_entries: int = DEFAULT_CACHE_ENTRIES, cache_tokens: int | None = None):
        """MODEL_DIR: a model folder. presets: a PresetStore or its file's path (default: the user's config
        folder, see gentwin.chat.presets). cache_entries, cache_tokens: the prefix cache's bounds (default:
        16 snapshots, 8 context lengths of tokens); cache_entries=0 turns it off."""
        self.engine = load_engine(engine)
        self.model = self.engine.Model(str(model_dir))
        self.tokenizer = self.engine.Tokenizer(self.model)
        self.context_length = self.model.config.context_length
        # A prompt leaves room for one generated token at least; a text longer than this cannot encode to that few.
        self.max_prompt_tokens = self.context_length - 1
        self.max_prompt_characters = self.max_prompt_tokens * prompts.longest_token_characters(model_dir)
        self.presets = presets if isinstance(presets, PresetStore) else PresetStore(presets)
        self.prefix_cache = PrefixCache(cache_entries, CACHE_CONTEXTS * self.context_length
                                        if cache_tokens is None else cache_tokens)
        self._active = 0
        self._active_lock = threading.Lock()

    @property
    def active_generators(self) -> int:
        """Generators running a call now (a stream abandoned midway frees its own at once)."""
        return self._active

    # -- the API ---------------------------------------------------------------------------------------

    def chat(self, messages, *, preset: str | None = None, **options) -> responses.ChatResponse:
        """Reply to MESSAGES; options as in gentwin.chat.options, over those of PRESET."""
        return self._respond(self._prepare_chat(messages, preset, options))

    def chat_stream(self, messages, *, preset: str | None = None, **options) -> Iterator[dict]:
        """chat(), as Cohere v2 stream events (gentwin.chat.responses). Closing the iterator early frees its
        generator."""
        call = self._prepare_chat(messages, preset, options)
        if call.options.num_generations != 1:
            raise ValueError("chat_stream streams one generation; use chat() for num_generations > 1")
        return self._events(call)

    def generate(self, prompt: str | None = None, *, preset: str | None = None, raw_prompting: bool = False,
                 **options) -> responses.ChatResponse:
        """Deprecated, as Cohere's Generate API is: chat() with PROMPT as the user's message, Generate's
        defaults (temperature 0.75, truncate END) and its stop_sequences, which stay in the text.
        raw_prompting=True encodes PROMPT as it is, without the chat template."""
        warnings.warn(migration_message(prompt, preset, raw_prompting, options), DeprecationWarning, stacklevel=2)
        return self.generate_without_warning(prompt, preset=preset, raw_prompting=raw_prompting, **options)

    def generate_without_warning(self, prompt: str | None = None, *, preset: str | None = None,
                                 raw_prompting: bool = False, **options) -> responses.ChatResponse:
        """generate(), for gentwin serve's /v1/generate, where Generate is the API asked for."""
        options, preset_prompt = self._options(preset, options, GENERATE_DEFAULTS)
        prompt = preset_prompt if prompt is None else prompt
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"generate needs a non-empty prompt string (or a preset with one), "
                             f"got {reprlib.repr(prompt)}")
        if raw_prompting:
            tokens = prompts.encode(self.tokenizer, prompt, self._prompt_characters(options))
        else:
            tokens = prompts.render(self.tokenizer, [{"role": "user", "content": prompt}],
                                    max_characters=self._prompt_characters(options))
        return self._respond(self._prepare(tokens, options, excluded=options.end_sequences,
                                           included=options.stop_sequences))

    def conversation(self, system: str | None = None, *, preset: str | None = None, **options):
        """A live conversation (onnxruntime-genai 0.6.0's chat mode), see gentwin.chat.conversation."""
        return Conversation(self, system, self._chat_options(preset, options))

    # -- preparing a call ------------------------------------------------------------------------------

    def _options(self, preset: str | None, given: dict, defaults: Options) -> tuple[Options, str | None]:
        """The call's options over the preset's, over DEFAULTS; and the preset's prompt, if any."""
        entries = self.presets.get(preset) if preset is not None else {}
        preset_prompt = entries.pop(PROMPT, None)
        options = resolve({**entries, **given}, defaults)
        if options.max_tokens is not None and options.max_tokens > self.max_prompt_tokens:
            raise ValueError(f"max_tokens must be at most {self.max_prompt_tokens}, got {options.max_tokens}: the "
                             f"model's context holds {self.context_length} tokens, one of them the prompt's at least")
        return options, preset_prompt

    def _prompt_characters(self, options: Options) -> int | None:
        """The most characters a prompt may have to be encoded: a prompt to be truncated is encoded whole."""
        return self.max_prompt_characters if options.truncate == "NONE" else None

    def _chat_options(self, preset: str | None, given: dict) -> Options:
        options, preset_prompt = self._options(preset, given, CHAT_DEFAULTS)
        if preset_prompt is not None:
            raise ValueError(f"preset {preset!r} has a prompt, which only generate() uses")
        return options

    def _prepare_chat(self, messages, preset: str | None, given: dict) -> _Call:
        options = self._chat_options(preset, given)
        messages = prompts.chat_messages(messages)
        tokens = prompts.render(self.tokenizer, messages, max_characters=self._prompt_characters(options))
        call = self._prepare(tokens, options, excluded=self.chat_stop_sequences(options), included=())
        if self.prefix_cache.enabled:  # where the prefill snapshots for the cache; nowhere without it
            call.system_prompt_length = prompts.system_prompt_length(self.tokenizer, messages, call.prompt)
        return call

    def _prepare(self, tokens: np.ndarray, options: Options, excluded, included) -> _Call:
        prompt = self.truncate(tokens, options.truncate)
        return _Call(prompt, options, excluded, included, None, self.new_generator(options, 0))

    def truncate(self, tokens: np.ndarray, mode: str) -> np.ndarray:
        """TOKENS as a prompt, truncated as MODE says (gentwin.chat.prompts.truncate) to leave room in the
        context for one generated token at least."""
        return prompts.truncate(tokens, mode, self.max_prompt_tokens)

    @staticmethod
    def chat_stop_sequences(options: Options) -> tuple[str, ...]:
        """The sequences that end a chat reply, each cut from the text with what follows it."""
        return options.stop_sequences + options.end_sequences

    def new_generator(self, options: Options, generation: int):
        """A Generator with the search options of generation number GENERATION, room for the whole context."""
        params = self.engine.GeneratorParams(self.model)
        params.set_search_options(**options.search_options(generation, self.context_length))
        return self.engine.Generator(self.model, params)

    # -- running a call --------------------------------------------------------------------------------

    def _respond(self, call: _Call) -> responses.ChatResponse:
        generations = []
        with contextlib.closing(self._replies(call)) as replies:
            for reply in replies:
                for _ in reply:  # read to its end: reply.text is then the whole text
                    pass
                generations.append(responses.Generation(reply.text, reply.finish_reason, tuple(reply.token_ids)))
        output_tokens = sum(len(generation.token_ids) for generation in generations)
        return responses.ChatResponse(responses.new_id(), tuple(generations), call.usage(output_tokens))

    def _events(self, call: _Call) -> Iterator[dict]:
        yield responses.message_start(responses.new_id())
        yield responses.content_start()
        with contextlib.closing(self._replies(call)) as replies:
            for reply in replies:
                for text in reply:
                    yield responses.content_delta(text)
        yield responses.content_end()
        yield responses.message_end(reply.finish_reason, call.usage(len(reply.token_ids)))

    def _replies(self, call: _Call) -> Iterator[Reply]:
        """The call's generations one at a time; each Reply is to be read to its end before the next."""
        count = call.options.num_generations
        prefilled = None
        for generation in range(count):
            generator = call.first_generator if generation == 0 else self.new_generator(call.options, generation)
            with self._tracked():
                if generation == 0:
                    call.cached_tokens = self._prefill(generator, call)
                    prefilled = generator.snapshot() if count > 1 else None
                else:
                    generator.restore(prefilled)
                yield Reply(generator, self.tokenizer, call.options.max_tokens, call.matcher())
                self.prefix_cache.keep(generator)

    def _prefill(self, generator, call: _Call) -> int:
        """Append the call's prompt to GENERATOR, starting from the prefix cache's best snapshot; how many
        prompt tokens that snapshot held."""
        prompt = call.prompt
        # The last prompt token always runs, so that the generator ends up exactly as a plain prefill leaves it
        # (fresh logits, and the prompt's end as where the reply begins, which the penalties read).
        cached, snapshot = self.prefix_cache.lookup(prompt[:-1])
        if snapshot is not None:
            generator.restore(snapshot)
            generator.rewind_to(cached)
        start = cached
        for end in [end for end in (call.system_prompt_length, len(prompt)) if end is not None and end > start]:
            generator.append_tokens(prompt[start:end])
            start = end
            if end < len(prompt):
                self.prefix_cache.keep(generator)
        return cached

    @contextlib.contextmanager
    def _tracked(self):
        with self._active_lock:
            self._active += 1
        try:
            yield
        finally:
            with self._active_lock:
                self._active -= 1


def migration_message(prompt, preset, raw_prompting: bool, given: dict) -> str:
    """The DeprecationWarning of generate(): the chat() call that does the same, and where they differ."""
    differing = {name: getattr(GENERATE_DEFAULTS, name) for name in OPTION_NAMES
                 if getattr(GENERATE_DEFAULTS, name) != getattr(CHAT_DEFAULTS, name)}
    arguments = {"messages": [{"role": "user", "content": prompt}], **differing,
                 **{name: value for name, value in given.items() if value is not None}}
    if preset is not None:
        arguments["preset"] = preset
    call = ", ".join(f"{name}={value!r}" for name, value in arguments.items())
    notes = []
    if given.get("stop_sequences"):
        notes.append("chat() leaves a stop sequence out of the text, where generate() keeps it")
    if raw_prompting:
        notes.append("chat() always applies the chat template, where generate(raw_prompting=True) does not")
    return (f"Client.generate() is deprecated, as Cohere's Generate API is; the same with chat(): "
            f"client.chat({call})" + "".join(f"; note: {note}" for note in notes))
