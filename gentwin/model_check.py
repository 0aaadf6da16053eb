"""A model folder checked when a Model loads: model.onnx is a graph, and genai_config.json tells its truth.

onnxruntime-genai finds most mistakes in a folder only when the model first runs, in onnxruntime's words
("Got invalid dimensions for output: logits"), and some never: with a wrong layer count or KV-head count
its CPU kernels run on. gentwin refuses such a folder at Model(), naming the genai_config.json field.
gentwin/config.py checks the config's own facts (token ids within the vocabulary, a known model type);
this module compares the config with what model.onnx declares, read without its weights:

- the inputs and outputs the config names exist: input_ids, logits, and each layer's past and present;
- the graph has the past inputs of exactly num_hidden_layers layers (0 layers: none), or, in a hybrid, each
  layer the inputs of its kind (lfm2's conv layers by layer_types; linear-attention layers, found by their
  recurrent state as the peer finds them, a conv state and a recurrent state of fixed sizes);
- the logits are vocab_size wide, and each past and present has num_key_value_heads heads of head_size,
  wherever the graph fixes those dimensions;
- where the graph leaves them symbolic (the builder's GroupQueryAttention layouts do), the attention node
  reading the past still fixes them: its kv_num_heads, and its query's width over its number of heads.

An encoder-decoder model's graphs take and give the tensors its config names (`check_encoder` for the encoder).

Both engines call `read_graph` and `check_against_config` in their load_graph, before any weight is read.
"""

from __future__ import annotations

import os

import onnx

from gentwin.config import (DEFAULT_INPUT_NAMES, ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES, SSRU_INPUT_NAMES,
                            SSRU_OUTPUT_NAMES, WINDOWED_KV_LAYER, ConfigError, DecoderConfig, GenaiConfig,
                            check_model_file)
from gentwin.graph_inputs import declared_shape, input_specs

GENERATOR_INPUTS = ("input_ids", "attention_mask", "position_ids")


def read_graph(config: GenaiConfig) -> onnx.ModelProto:
    """model.onnx without its external data, from the file or from the bytes given with
    Config.add_model_data; ConfigError if there is neither, or they are empty or hold no ONNX graph."""
    path = config.model_path
    if config.model_bytes is not None:
        return _parsed(lambda: onnx.ModelProto.FromString(config.model_bytes),
                       f"{path} (from memory: Config.add_model_data)")
    check_model_file(config)
    if os.path.getsize(path) == 0:
        raise ConfigError(f"cannot load {path}: the file is empty")
    return _parsed(lambda: onnx.load(path, load_external_data=False), path)


def read_encoder(config: GenaiConfig) -> onnx.ModelProto:
    """An encoder-decoder model's encoder graph without its external data, checked against model.encoder."""
    proto = _parsed(lambda: onnx.load(config.encoder_path, load_external_data=False), config.encoder_path)
    check_encoder(config, proto)
    return proto


def _parsed(load, source: str) -> onnx.ModelProto:
    try:
        proto = load()
    except Exception as error:  # onnx raises several types for a corrupt or truncated file
        raise ConfigError(f"cannot load {source}: {error}") from error
    if not proto.HasField("graph"):
        raise ConfigError(f"cannot load {source}: it holds no ONNX graph")
    return proto


def check_against_config(config: GenaiConfig, proto: onnx.ModelProto) -> None:
    """Raise ConfigError naming the genai_config.json field that the graph PROTO contradicts."""
    decoder = config.decoder
    inputs = {name: spec.shape for name, spec in input_specs(proto, config.model_path).items()}
    outputs = {value.name: declared_shape(value) for value in proto.graph.output}
    _check_generator_inputs(decoder, inputs)
    _check_logits(config, outputs)
    decoder.find_recurrent_layers(inputs)
    if decoder.conv_layers:  # lfm2: the KV inputs of its attention layers only, and the conv states
        _check_conv_states(decoder, inputs, outputs)
    elif decoder.recurrent_layers:  # Qwen3.5: the KV inputs of its attention layers only, and the linear layers' states
        _check_recurrent_states(decoder, inputs, outputs)
    else:
        _check_layer_count(decoder, inputs)
    for layer in decoder.attention_layers:
        _check_cache_tensors(decoder, "inputs", decoder.past_fields, decoder.past_names(layer), inputs)
        _check_cache_tensors(decoder, "outputs", decoder.present_fields, decoder.present_names(layer), outputs)
    _check_attention_nodes(decoder, proto.graph)
    if config.encoder:
        _check_named("model.decoder", {**SSRU_INPUT_NAMES, **SSRU_OUTPUT_NAMES}, decoder.input_names,
                     decoder.output_names, inputs, outputs)


def check_encoder(config: GenaiConfig, proto: onnx.ModelProto) -> None:
    """Raise ConfigError naming the model.encoder field that the encoder graph PROTO contradicts."""
    encoder = config.encoder
    inputs = {value.name: declared_shape(value) for value in proto.graph.input}
    outputs = {value.name: declared_shape(value) for value in proto.graph.output}
    _check_named("model.encoder", {**ENCODER_INPUT_NAMES, **ENCODER_OUTPUT_NAMES}, encoder.input_names,
                 encoder.output_names, inputs, outputs)


def _check_named(where: str, fields, input_names: dict, output_names: dict, inputs: dict, outputs: dict) -> None:
    """Each of FIELDS names, in the config's inputs or outputs, a tensor the graph takes or gives."""
    for field in fields:
        section, names, tensors = (("inputs", input_names, inputs) if field in input_names
                                   else ("outputs", output_names, outputs))
        if names[field] not in tensors:
            raise ConfigError(f"genai_config.json: '{where}.{section}.{field}' is {names[field]!r}, but the graph "
                              f"has no {section[:-1]} of that name; its {section} are {_listing(tensors)}")


def _listing(names) -> str:
    names = list(names)
    return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")


def _check_generator_inputs(decoder: DecoderConfig, inputs: dict) -> None:
    """input_ids must be an input. A graph may lack attention_mask or position_ids, but not take them under
    their usual name while the config names them otherwise: the generator would not feed them."""
    for field in GENERATOR_INPUTS:
        name = decoder.input_names[field]
        if name not in inputs and (field == "input_ids" or DEFAULT_INPUT_NAMES[field] in inputs):
            raise ConfigError(f"genai_config.json: 'model.decoder.inputs.{field}' is {name!r}, but the graph has "
                              f"no input of that name; its inputs are {_listing(inputs)}")


def _check_logits(config: GenaiConfig, outputs: dict) -> None:
    name = config.decoder.output_names["logits"]
    if name not in outputs:
        raise ConfigError(f"genai_config.json: 'model.decoder.outputs.logits' is {name!r}, but the graph has no "
                          f"output of that name; its outputs are {_listing(outputs)}")
    width = outputs[name][-1] if outputs[name] else None  # [batch, length, vocab]
    if isinstance(width, int) and width != config.vocab_size:
        raise ConfigError(f"genai_config.json: 'model.vocab_size' is {config.vocab_size}, but the graph's "
                          f"{name} output is {width} wide")


def _layers_in_graph(decoder: DecoderConfig, inputs: dict) -> int:
    """How many layers, from layer 0 on, the graph has every past input of, as the config names them."""
    layers = 0
    while layers < len(inputs) and all(name in inputs for name in decoder.past_names(layers)):
        layers += 1
    return layers


def _check_layer_count(decoder: DecoderConfig, inputs: dict) -> None:
    found, expected = _layers_in_graph(decoder, inputs), decoder.num_hidden_layers
    if found == expected:
        return
    if found == 0:  # not one layer matches: the names are wrong, not the count
        field, name = next((field, name) for field, name in zip(decoder.past_fields, decoder.past_names(0))
                           if name not in inputs)
        raise ConfigError(f"genai_config.json: 'model.decoder.inputs.{field}' is {decoder.input_names[field]!r}, "
                          f"but the graph has no input {name}; its inputs are {_listing(inputs)}")
    raise ConfigError(f"genai_config.json: 'model.decoder.num_hidden_layers' is {expected}, but the graph has "
                      f"the KV-cache inputs of {found} layers ({decoder.past_names(0)[0]} to "
                      f"{decoder.past_names(found - 1)[-1]})")


def _check_conv_states(decoder: DecoderConfig, inputs: dict, outputs: dict) -> None:
    """Each conv layer's past state is an input [batch, channels, K - 1] whose channels and K - 1 the graph
    fixes (onnxruntime-genai sizes the state from them), and its present state an output."""
    for layer in decoder.conv_layers:
        for section, field, name, shapes in zip(("inputs", "outputs"), ("past_conv_names", "present_conv_names"),
                                                decoder.conv_names(layer), (inputs, outputs)):
            if name not in shapes:
                templates = decoder.input_names if section == "inputs" else decoder.output_names
                raise ConfigError(f"genai_config.json: 'model.decoder.{section}.{field}' is {templates[field]!r}, "
                                  f"but the graph has no {section[:-1]} {name} for conv layer {layer}")
        shape = inputs[decoder.conv_names(layer)[0]]
        if len(shape or ()) != 3 or not all(isinstance(dim, int) for dim in shape[1:]):
            raise ConfigError(f"the graph's conv state {decoder.conv_names(layer)[0]} is declared {shape}, not "
                              "[batch, channels, K - 1] with fixed channels and K - 1")


def _check_recurrent_states(decoder: DecoderConfig, inputs: dict, outputs: dict) -> None:
    """Each linear-attention layer has its conv state [batch, channels, K - 1] and recurrent state [batch, heads,
    Dk, Dv] as inputs and outputs, their sizes but the batch fixed by the graph (the peer sizes them from those
    and refuses a dynamic one)."""
    fields = (("past_conv_names", "past_recurrent_names"), ("present_conv_names", "present_recurrent_names"))
    for layer in decoder.recurrent_layers:
        for section, section_fields, names, shapes in zip(("inputs", "outputs"), fields,
                                                          decoder.recurrent_names(layer), (inputs, outputs)):
            for field, name in zip(section_fields, names):
                if name not in shapes:
                    raise ConfigError(f"genai_config.json: 'model.decoder.{section}.{field}' is "
                                      f"{decoder.recurrent_templates[field]!r}, but the graph has no {section[:-1]} "
                                      f"{name} for linear-attention layer {layer}")
        for name, rank in zip(decoder.recurrent_names(layer)[0], (3, 4)):
            shape = inputs[name]
            if len(shape or ()) != rank or not all(isinstance(dim, int) for dim in shape[1:]):
                raise ConfigError(f"the graph's state {name} of linear-attention layer {layer} is declared {shape}, "
                                  f"not {rank} dimensions fixed but the batch (onnxruntime-genai sizes it from them)")


def _kv_axes(decoder: DecoderConfig) -> tuple[int, int]:
    """The axes of a past or present that hold the head count and the head size: [B, H, S, D], or gpt2's
    combined [2, B, H, S, D]."""
    return (2, 4) if decoder.combined_past else (1, 3)


def _check_cache_tensors(decoder: DecoderConfig, section: str, fields: list[str], names: list[str],
                         shapes: dict) -> None:
    """One layer's past inputs (SECTION "inputs", FIELDS naming NAMES) or present outputs ("outputs") exist
    and have the config's heads."""
    heads_axis, size_axis = _kv_axes(decoder)
    templates = decoder.input_names if section == "inputs" else decoder.output_names
    for field, name in zip(fields, names):
        where = f"'model.decoder.{section}.{field}'"
        if name not in shapes:
            raise ConfigError(f"genai_config.json: {where} is {templates[field]!r}, but the graph has no "
                              f"{section[:-1]} {name}")
        shape = shapes[name]
        if not shape:  # undeclared
            continue
        dims = "[" + ", ".join(str(dim) for dim in shape) + "]"
        if len(shape) != size_axis + 1:
            raise ConfigError(f"genai_config.json: {where} names {name}, which the graph declares as {dims}; a "
                              f"{'combined ' if decoder.combined_past else ''}KV cache has {size_axis + 1} "
                              "dimensions")
        if isinstance(shape[heads_axis], int) and shape[heads_axis] != decoder.num_key_value_heads:
            raise ConfigError(f"genai_config.json: 'model.decoder.num_key_value_heads' is "
                              f"{decoder.num_key_value_heads}, but the graph's {name} has {shape[heads_axis]} "
                              f"heads {dims}")
        if isinstance(shape[size_axis], int) and shape[size_axis] != decoder.head_size:
            raise ConfigError(f"genai_config.json: 'model.decoder.head_size' is {decoder.head_size}, but the "
                              f"graph's {name} has heads of size {shape[size_axis]} {dims}")


class _Widths:
    """The last dimension of a tensor of the graph, where the graph fixes it without running: declared, a
    weight's, or a projection's output (MatMul by a weight, MatMulNBits' N), seen through a bias Add, a Cast
    or a (multimodal) RotaryEmbedding. None where it does not."""

    def __init__(self, graph: onnx.GraphProto):
        self.shapes = {value.name: declared_shape(value) for value in (*graph.input, *graph.value_info, *graph.output)}
        self.shapes.update((tensor.name, tuple(tensor.dims)) for tensor in graph.initializer)
        self.producers = {output: node for node in graph.node for output in node.output}
        self.known = {}

    def __call__(self, name: str):
        if name not in self.known:
            self.known[name] = self._width(name)
        return self.known[name]

    def _width(self, name: str):
        shape = self.shapes.get(name)
        if shape and isinstance(shape[-1], int):
            return shape[-1]
        node = self.producers.get(name)
        if node is None:
            return None
        if node.op_type == "MatMulNBits":
            return _attributes(node).get("N")
        if node.op_type == "MatMul":
            weight = self.shapes.get(node.input[1])
            return weight[-1] if weight and len(weight) >= 2 and isinstance(weight[-1], int) else None
        if node.op_type in ("Cast", "RotaryEmbedding", "MRotaryEmbedding"):
            return self(node.input[0])
        if node.op_type == "Add":  # a bias broadcast along the projection's width; a width of 1 says nothing
            return max((width for width in map(self, node.input) if width and width > 1), default=None)
        return None


def _attributes(node: onnx.NodeProto) -> dict:
    return {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}


def _attention_heads(node: onnx.NodeProto) -> tuple[int, int] | None:
    """(KV heads, heads in its query input) of an attention node reading the past, None if it does not say.
    GroupQueryAttention without a key input takes queries, keys and values packed in its query input."""
    attributes = _attributes(node)
    heads = attributes.get("num_heads")
    has_key = len(node.input) > 1 and bool(node.input[1])
    if node.op_type == "GroupQueryAttention" and heads and attributes.get("kv_num_heads"):
        kv_heads = attributes["kv_num_heads"]
        return kv_heads, heads if has_key else heads + 2 * kv_heads
    if node.op_type == "MultiHeadAttention" and heads and has_key:  # a packed query there is [B, S, H, 3, D]
        return heads, heads
    return None


def _check_attention_nodes(decoder: DecoderConfig, graph: onnx.GraphProto) -> None:
    """Where a past's head dimensions are symbolic, the attention node reading it still fixes them."""
    pasts = set(decoder.cache_names()[0])
    width = _Widths(graph)
    for node in graph.node:
        heads = _attention_heads(node) if node.domain == "com.microsoft" and pasts.intersection(node.input) else None
        if heads is None:
            continue
        kv_heads, query_heads = heads
        if kv_heads != decoder.num_key_value_heads:
            raise ConfigError(f"genai_config.json: 'model.decoder.num_key_value_heads' is "
                              f"{decoder.num_key_value_heads}, but the graph's {node.op_type} node {node.name!r} "
                              f"reads {kv_heads} KV heads")
        query_width = width(node.input[0])
        if query_width is not None and query_width != query_heads * decoder.head_size:
            raise ConfigError(f"genai_config.json: 'model.decoder.head_size' is {decoder.head_size}, but the "
                              f"graph's {node.op_type} node {node.name!r} takes {query_heads} heads in a query "
                              f"{query_width} wide: heads of size {query_width / query_heads:g}")


def windowed_attention_layers(decoder: DecoderConfig, graph: onnx.GraphProto) -> frozenset[int]:
    """The layers whose cache is a window-sized buffer the attention op evicts from itself: those
    decoder.sliding_window covers whose GroupQueryAttention reads its past with sliding_window_cache=1.
    A layer the config covers but whose attention keeps no window (the builder's MultiHeadAttention in
    half precision, mistral3's window wider than its context) carries a plain KV cache, as in the peer."""
    covered = {name: layer for layer in decoder.attention_layers if decoder.layer_kind(layer) == WINDOWED_KV_LAYER
               for name in decoder.past_names(layer)}
    return frozenset(covered[node.input[3]] for node in graph.node
                     if node.op_type == "GroupQueryAttention" and len(node.input) > 3 and node.input[3] in covered
                     and _attributes(node).get("sliding_window_cache", 0))
