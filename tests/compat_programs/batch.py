"""Batch: every line of standard input is one prompt; all are generated together, then printed."""

import argparse
import sys

import onnxruntime_genai as og


def main():
    parser = argparse.ArgumentParser(description="generate for a batch of prompts")
    parser.add_argument("-m", "--model_path", required=True)
    parser.add_argument("-l", "--max_length", type=int, default=32)
    args = parser.parse_args()

    prompts = [line.rstrip("\n") for line in sys.stdin if line.strip()]

    model = og.Model(args.model_path)
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=args.max_length, batch_size=len(prompts))

    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode_batch(prompts))
    while not generator.is_done():
        generator.generate_next_token()

    for i, prompt in enumerate(prompts):
        print(f"Prompt #{i}: {prompt}")
        print(tokenizer.decode(generator.get_sequence(i)))
        print()


if __name__ == "__main__":
    main()
