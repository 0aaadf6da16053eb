"""`make demo`: prove the engines agree on a bundled fixture, then hold a short chat with it.

The fixtures have random weights, so the chat's words are noise; what it shows is the mechanics: the chat
template, a system prompt appended once and cached, each user turn appended to the live generator
(onnxruntime-genai 0.6.0's chat mode), and streamed detokenisation.
"""

from __future__ import annotations

import json
import sys

from gentwin.conformance.check import PEER_MODULE, bundled_models, check

TURNS = ["Hello! What is gentwin?", "And how do you know the two engines agree?"]


def stream_reply(generator, tokenizer, max_new_tokens: int) -> str:
    stream, text = tokenizer.create_stream(), []
    for _ in range(max_new_tokens):
        if generator.is_done():
            break
        generator.generate_next_token()
        piece = stream.decode(int(generator.get_next_tokens()[0]))
        text.append(piece)
        print(piece, end="", flush=True)
    print()
    return "".join(text)


def chat(og, model_dir: str, system: str = "You are a tiny random model.", max_new_tokens: int = 24) -> None:
    model = og.Model(model_dir)
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=model.config.context_length)
    generator = og.Generator(model, params)
    system_prompt = tokenizer.apply_chat_template(json.dumps([{"role": "system", "content": system}]),
                                                  add_generation_prompt=False)
    generator.append_tokens(tokenizer.encode(system_prompt))  # cached: every turn continues from it
    print(f"system: {system}")
    for turn in TURNS:
        print(f"user: {turn}")
        prompt = tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": turn}]),
                                               add_generation_prompt=True)
        generator.append_tokens(tokenizer.encode(prompt))
        print("assistant: ", end="")
        stream_reply(generator, tokenizer, max_new_tokens)


def main() -> int:
    import gentwin.reference as og

    models = bundled_models()
    if not models:
        print("no bundled fixtures: run `make fixtures`", file=sys.stderr)
        return 1
    agreed = check(PEER_MODULE, "gentwin.reference", models)
    chat_model = next((m for m in models if "llama" in m.name), models[0])
    print(f"\nA short chat with {chat_model.name} on gentwin.reference (random weights: the words are noise):\n")
    chat(og, str(chat_model))
    return 0 if agreed else 1
