"""Chat: the system prompt is run once and kept; each turn appends the user's message to it, streams a
reply of at most --max_new_tokens tokens, then rewinds to the system prompt for the next turn."""

import argparse
import json

import onnxruntime_genai as og


def main():
    parser = argparse.ArgumentParser(description="chat with a cached system prompt")
    parser.add_argument("-m", "--model_path", required=True)
    parser.add_argument("-s", "--system_prompt", default="You are a helpful assistant. Be brief.")
    parser.add_argument("-n", "--max_new_tokens", type=int, default=24)
    args = parser.parse_args()

    model = og.Model(args.model_path)
    tokenizer = og.Tokenizer(model)
    stream = tokenizer.create_stream()

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=128, repetition_penalty=1.1)
    generator = og.Generator(model, params)

    system_prompt = tokenizer.apply_chat_template(
        json.dumps([{"role": "system", "content": args.system_prompt}]), add_generation_prompt=False
    )
    system_tokens = tokenizer.encode(system_prompt)
    generator.append_tokens(system_tokens)
    print(f"System prompt: {len(system_tokens)} tokens cached")

    while True:
        try:
            text = input("Prompt (Use quit() to exit): ")
        except EOFError:
            break
        if text == "quit()":
            break

        user_prompt = tokenizer.apply_chat_template(
            json.dumps([{"role": "user", "content": text}]), add_generation_prompt=True
        )
        user_tokens = tokenizer.encode(user_prompt)
        generator.append_tokens(user_tokens)

        print("Output: ", end="", flush=True)
        new_tokens = 0
        while not generator.is_done() and new_tokens < args.max_new_tokens:
            generator.generate_next_token()
            new_tokens += 1
            print(stream.decode(generator.get_next_tokens()[0]), end="", flush=True)
        print()
        print(f"Total tokens: {generator.token_count()}")

        generator.rewind_to(len(system_tokens))


if __name__ == "__main__":
    main()
