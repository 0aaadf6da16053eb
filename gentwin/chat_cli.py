"""`gentwin chat MODEL_DIR`: chat with a model in the terminal, each reply streamed as it is generated.

The conversation is a gentwin.chat Conversation: one live Generator, the system prompt appended once, each
turn appending only its new tokens (onnxruntime-genai 0.6.0's chat mode). Commands, on a line of their own:

    /undo    forget the last turn (the generator rewinds to where it began)
    /reset   forget every turn; the system prompt stays
    /help    this list
    /quit    leave (so does end of input, Ctrl-D)
"""

from __future__ import annotations

from gentwin.chat import Client
from gentwin.errors import GentwinError

COMMANDS = __doc__[__doc__.index("    /undo"):].rstrip()


def run(args) -> int:
    """Chat as ARGS say (gentwin.cli's `chat` arguments), on standard input and output."""
    client = Client(args.model_dir, args.engine, presets=args.presets)
    conversation = client.conversation(args.system, preset=args.preset, max_tokens=args.max_tokens,
                                       temperature=args.temperature, seed=args.seed)
    print(f"Chatting with {args.model_dir} on gentwin.{args.engine}. /help lists the commands.")
    while True:
        try:
            line = input("> ")
        except EOFError:
            print()
            return 0
        command = line.strip()
        try:
            if command == "/quit":
                return 0
            if command == "/help":
                print(COMMANDS)
            elif command == "/undo":
                conversation.undo()
                print("(last turn forgotten)")
            elif command == "/reset":
                conversation.reset()
                print("(conversation reset)")
            elif command:
                for piece in conversation.say(line):
                    print(piece, end="", flush=True)
                print(f"\n({conversation.finish_reason})")
        except (GentwinError, ValueError) as error:
            print(f"error: {error}")
        except KeyboardInterrupt:  # stops the reply; the next turn rewinds what it left
            print("\n(interrupted)")
