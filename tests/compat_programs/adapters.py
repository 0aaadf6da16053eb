"""LoRA adapters: each line of standard input is answered by the base model and by every adapter given,
one generator each, then the adapters are unloaded."""

import argparse

import onnxruntime_genai as og


def main():
    parser = argparse.ArgumentParser(description="switch LoRA adapters between generators")
    parser.add_argument("-m", "--model_path", required=True)
    parser.add_argument("-a", "--adapter", action="append", default=[], help="NAME=PATH of an .onnx_adapter file")
    parser.add_argument("-l", "--max_length", type=int, default=24)
    args = parser.parse_args()

    model = og.Model(args.model_path)
    tokenizer = og.Tokenizer(model)
    adapters = og.Adapters(model)
    names = []
    for spec in args.adapter:
        name, path = spec.split("=", 1)
        adapters.load(path, name)
        names.append(name)

    while True:
        try:
            text = input()
        except EOFError:
            break
        for name in [None, *names]:
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=args.max_length)
            generator = og.Generator(model, params)
            if name is not None:
                generator.set_active_adapter(adapters, name)
            generator.append_tokens(tokenizer.encode(text))
            while not generator.is_done():
                generator.generate_next_token()
            print(f"[{name or 'base'}] {tokenizer.decode(generator.get_sequence(0))}")
            del generator

    for name in names:
        adapters.unload(name)
    print(f"unloaded {len(names)} adapters")


if __name__ == "__main__":
    main()
