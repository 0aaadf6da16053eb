"""Question and answer: a reply to each line of standard input, sampled with a fixed seed and streamed."""

import argparse
import json

import onnxruntime_genai as og


def main():
    parser = argparse.ArgumentParser(description="question and answer with onnxruntime-genai")
    parser.add_argument("-m", "--model_path", required=True)
    parser.add_argument("-l", "--max_length", type=int, default=48)
    args = parser.parse_args()

    model = og.Model(args.model_path)
    tokenizer = og.Tokenizer(model)
    search_options = {
        "do_sample": True,
        "top_k": 40,
        "top_p": 0.9,
        "temperature": 0.8,
        "random_seed": 42,
        "max_length": args.max_length,
    }

    while True:
        try:
            text = input("Input: ")
        except EOFError:
            break
        if not text:
            print("Error, input cannot be empty")
            continue

        messages = json.dumps([{"role": "user", "content": text}])
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        input_tokens = tokenizer.encode(prompt)

        params = og.GeneratorParams(model)
        params.set_search_options(**search_options)
        generator = og.Generator(model, params)
        generator.append_tokens(input_tokens)

        stream = tokenizer.create_stream()
        print("Output: ", end="", flush=True)
        while not generator.is_done():
            generator.generate_next_token()
            print(stream.decode(generator.get_next_tokens()[0]), end="", flush=True)
        print()
        print(f"[{generator.token_count() - len(input_tokens)} new tokens]")
        del generator


if __name__ == "__main__":
    main()
