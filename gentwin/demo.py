"""`make demo`: `gentwin check` on the bundled fixtures (gentwin.fast, then onnxruntime-genai, each against
gentwin.reference), then a short chat with one of them.

The fixtures have random weights, so the chat's words are noise; what it shows is the mechanics: the chat
template, a system prompt appended once and cached, each user turn appended to the live generator
(onnxruntime-genai 0.6.0's chat mode), and streamed detokenisation.
"""

from __future__ import annotations

from gentwin.conformance.check import DEFAULT_IMPL, DEFAULT_ORACLE, PEER_MODULE, bundled_models, check
from gentwin.errors import GentwinError

TURNS = ["Hello! What is gentwin?", "And how do you know the two engines agree?"]
CHECK_EXAMPLES = 3  # generated scenarios per model and family: a quick look, where CI runs `gentwin check`


def chat(model_dir: str, engine: str = "fast", system: str = "You are a tiny random model.") -> None:
    """A live conversation (gentwin.chat.Conversation): the system prompt appended once, each turn appended to
    the same generator, the reply streamed as it is decoded."""
    from gentwin.chat import Client

    conversation = Client(model_dir, engine).conversation(system, max_tokens=24, temperature=0)
    print(f"system: {system}")
    for turn in TURNS:
        print(f"user: {turn}\nassistant: ", end="")
        for piece in conversation.say(turn):
            print(piece, end="", flush=True)
        print()


def main() -> int:
    models = bundled_models()
    if not models:
        raise GentwinError("no bundled fixtures in fixtures/models: run `make fixtures`")
    agreed = all([check(impl, DEFAULT_ORACLE, models, CHECK_EXAMPLES) for impl in (DEFAULT_IMPL, PEER_MODULE)])
    chat_model = next((m for m in models if "llama" in m.name), models[0])
    print(f"\nA short chat with {chat_model.name} on gentwin.fast (random weights: the words are noise):\n")
    chat(str(chat_model))
    return 0 if agreed else 1
