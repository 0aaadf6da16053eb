"""`gentwin chat MODEL_DIR`: chat with a model in the terminal, each reply streamed as it is generated.

The conversation is a gentwin.chat Conversation: one live Generator, the system prompt appended once, each
turn appending only its new tokens (onnxruntime-genai 0.6.0's chat mode). The model folder's chat template
renders the turns, or the template in the file `--chat-template FILE`; a folder without one is refused at
start. Commands, on a line of their own:

    /undo    forget the last turn (the generator rewinds to where it began)
    /reset   forget every turn; the system prompt stays
    /help    this list
    /quit    leave (so does end of input, Ctrl-D)

Any other line beginning with / is refused as an unknown command; to say such a line, begin it with //.
Ctrl-C during a reply stops it at the next token and forgets that turn (a second Ctrl-C leaves at once);
Ctrl-C at the prompt leaves with exit status 130.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path

from gentwin import chat_template
from gentwin.chat import Client, prompts
from gentwin.chat.options import CHAT_DEFAULTS, resolve
from gentwin.cli import INTERRUPTED
from gentwin.errors import GentwinError

COMMANDS = "\n".join(line for line in __doc__.splitlines() if line.startswith("    /"))
COMMAND_NAMES = " ".join(line.split()[0] for line in COMMANDS.splitlines())
ESCAPE = "//"  # a line beginning with it is said with one slash fewer


class TemplatedTokenizer:
    """A Tokenizer whose chats render with TEMPLATE instead of the model folder's (--chat-template)."""

    def __init__(self, tokenizer, template: str):
        self._tokenizer, self._template = tokenizer, template

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def apply_chat_template(self, messages: str, *, template_str: str | None = None, **options) -> str:
        return self._tokenizer.apply_chat_template(messages, template_str=template_str or self._template, **options)


def read_template(path: str) -> str:
    """The chat template in the file PATH."""
    try:
        template = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise GentwinError(f"cannot read the --chat-template file {path!r}: {error}") from None
    if not template.strip():
        raise GentwinError(f"the --chat-template file {path!r} is empty")
    return template


def folder_template(model_dir) -> str:
    """The model folder's own chat template, '' when it has none (tokenizer_config.json read by the Tokenizer)."""
    with open(Path(model_dir, "tokenizer_config.json"), encoding="utf-8") as config_file:
        return chat_template.load_default_template(str(model_dir), json.load(config_file))


@contextlib.contextmanager
def option_errors_told():
    """The option checks' ValueError and TypeError, as the user errors they are here (gentwin.cli tells those)."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise GentwinError(str(error)) from None


def use_template(client, args, template: str | None) -> None:
    """Render the client's chats with TEMPLATE (the --chat-template file's), if any, else with the folder's, and
    refuse a template that is missing or cannot render a first turn now, not at the first line the user types."""
    if template is not None:
        client.tokenizer = TemplatedTokenizer(client.tokenizer, template)
    elif not folder_template(args.model_dir):
        raise GentwinError(f"{args.model_dir} has no chat template (tokenizer_config.json's 'chat_template', "
                           f"chat_template.jinja or chat_template.json); give one with --chat-template FILE")
    first_turn = [{"role": "system", "content": args.system}] if args.system is not None else []
    try:
        prompts.render(client.tokenizer, prompts.chat_messages(first_turn + [{"role": "user", "content": "Hello"}]))
    except GentwinError as error:
        source = f"the --chat-template file {args.chat_template!r}" if template is not None else "the chat template"
        raise GentwinError(f"{source} cannot render a first turn: {error}") from None


def start(args):
    """The conversation ARGS ask for (gentwin.cli's `chat` arguments), every argument checked first."""
    given = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}
    with option_errors_told():
        resolve(given, CHAT_DEFAULTS)  # before the model loads, so that a bad value fails at once
    template = read_template(args.chat_template) if args.chat_template else None  # likewise
    client = Client(args.model_dir, args.engine, presets=args.presets)
    use_template(client, args, template)
    with option_errors_told():  # the preset's options, checked as the call's are
        return client.conversation(args.system, preset=args.preset, **given)


@contextlib.contextmanager
def deferred_interrupts():
    """Within, Ctrl-C is noted in the yielded list instead of raised, so that a reply stops between tokens,
    where the generator is whole; a second Ctrl-C raises KeyboardInterrupt as usual."""
    noted: list[bool] = []

    def note(signum, frame):
        if noted:
            raise KeyboardInterrupt
        noted.append(True)

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGINT, previous)


def reply(conversation, line: str) -> None:
    """Stream the reply to LINE; Ctrl-C stops it and the turn is forgotten (the next one rewinds past it)."""
    with deferred_interrupts() as interrupted, contextlib.closing(conversation.say(line)) as pieces:
        for piece in pieces:
            print(piece, end="", flush=True)
            if interrupted:
                print("\n(interrupted: this turn is forgotten)")
                return
    print(f"\n({conversation.finish_reason})")


def obey(conversation, command: str) -> None:
    """Run the /COMMAND; an unknown one is refused, nothing is sent to the model."""
    if command == "/help":
        print(COMMANDS)
    elif command == "/undo":
        conversation.undo()
        print("(last turn forgotten)")
    elif command == "/reset":
        conversation.reset()
        print("(conversation reset)")
    else:
        raise GentwinError(f"unknown command {command}; commands: {COMMAND_NAMES} (begin a line with {ESCAPE} "
                           f"to say it)")


def run(args) -> int:
    """Chat as ARGS say, on standard input and output; return the exit status."""
    conversation = start(args)
    print(f"Chatting with {args.model_dir} on gentwin.{args.engine}. /help lists the commands.")
    while True:
        try:
            line = input("> ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            return INTERRUPTED
        command = line.strip()
        try:
            if command == "/quit":
                return 0
            if command.startswith(ESCAPE):
                reply(conversation, line.replace(ESCAPE, "/", 1))
            elif command.startswith("/"):
                obey(conversation, command)
            elif command:
                reply(conversation, line)
        except (GentwinError, ValueError) as error:  # this turn's, told; the conversation goes on
            print(f"error: {error}", file=sys.stderr)
