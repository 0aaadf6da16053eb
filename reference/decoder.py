"""The decoder graph in numpy: model.onnx's nodes run by onnx's reference kernels and gentwin's contrib kernels,
in the order gentwin.reference.graph_runner prepared at load.

`load_graph` reads the model once per Model; `DecoderState` is one generator's view of it: the attention
mask and positions so far, the KV cache, and the outputs of the last run.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx.reference.op_run import RuntimeContextError
from onnx.reference.ops import load_op

from gentwin import model_check, position_inputs
from gentwin.config import ConfigError
from gentwin.decoder_state import CachedState, layer_caches
from gentwin.errors import GentwinError
from gentwin.graph_inputs import declared_shape
from gentwin.reference.blas_threads import BLAS_THREADS
from gentwin.reference.graph_runner import GraphRunner
from gentwin.reference.kv_cache import layer_cache
from gentwin.reference.ops import CONTRIB_OPS
from gentwin.threads import peer_intra_op_threads


class UnsupportedOperatorError(GentwinError):
    """The model uses an operator gentwin.reference has no kernel for."""


def _kernel(node: onnx.NodeProto, opset: dict):
    """The contrib kernel class for NODE, True for a standard operator onnx's evaluator runs, else None."""
    for op in CONTRIB_OPS:
        if op.op_domain == node.domain and op.__name__ == node.op_type:
            return op
    if node.domain not in ("", "ai.onnx"):
        return None
    try:
        load_op(node.domain, node.op_type, opset.get(node.domain, opset.get("")))
    except RuntimeContextError:
        return True  # defined by a function body (e.g. Gelu) that the evaluator expands per node
    except NotImplementedError:
        return None
    return True


def _nodes(graph: onnx.GraphProto):
    """Every node of GRAPH and of the subgraphs its nodes hold (If branches, Loop and Scan bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                yield from _nodes(subgraph)


def check_supported(proto: onnx.ModelProto, path: str) -> None:
    """Refuse a model with an operator gentwin.reference has no kernel for, or a contrib node whose attribute
    values, inputs or outputs its kernel does not implement, subgraphs included."""
    opset = {entry.domain: entry.version for entry in proto.opset_import}
    missing = set()
    for node in _nodes(proto.graph):
        kernel = _kernel(node, opset)
        if kernel is None:
            missing.add(f"{node.domain or 'ai.onnx'}.{node.op_type}")
        elif kernel is not True:
            try:
                kernel.check_node(node)
            except NotImplementedError as error:
                raise UnsupportedOperatorError(f"{path}: node {node.name!r}: {error}") from None
    if missing:
        raise UnsupportedOperatorError(
            f"{path} uses operators gentwin.reference has no kernel for: {', '.join(sorted(missing))}"
        )


class Graph:
    """model.onnx, loaded and checked once; `run` evaluates it on one set of feeds, on as many BLAS threads as
    the peer's session would take (gentwin.reference.blas_threads)."""

    def __init__(self, proto: onnx.ModelProto, weights: dict, windowed_layers: frozenset[int], threads: int):
        self.weights = weights  # the initializers held outside PROTO (see map_external_weights)
        self.runner = GraphRunner(proto, weights)
        self.windowed_layers = windowed_layers  # see model_check.windowed_attention_layers
        self.threads = threads
        self.takes_chunks_over_past = position_inputs.takes_chunks_over_past(proto.graph)
        self.input_types = {value.name: onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
                            for value in proto.graph.input}
        self.input_shapes = {value.name: declared_shape(value) for value in proto.graph.input}
        self.output_names = [value.name for value in proto.graph.output]

    def typed(self, feeds: dict) -> dict:
        """FEEDS converted to the element types the graph declares for them."""
        return {name: value.astype(self.input_types[name], copy=False) for name, value in feeds.items()}

    def run(self, feeds: dict) -> dict:
        """Evaluate the graph on FEEDS, already of the types it declares (see typed)."""
        # Builder-written masks add float32's lowest value to itself on purpose, giving -inf.
        with np.errstate(over="ignore"), BLAS_THREADS.limited_to(self.threads):
            return dict(zip(self.output_names, self.runner.run(feeds)))


def load_graph(config, _provider_config=None) -> Graph:
    """Read the decoder, check every operator has a kernel and the graph is the one genai_config.json describes,
    then map its weights (external data)."""
    path = config.model_path
    proto = model_check.read_graph(config)
    check_supported(proto, path)
    model_check.check_against_config(config, proto)
    windowed_layers = model_check.windowed_attention_layers(config.decoder, proto.graph)
    try:
        weights = map_external_weights(proto, os.path.dirname(path))
    except Exception as error:  # a missing, short or unreadable data file
        raise ConfigError(f"cannot load {path}: {error}") from error
    return Graph(proto, weights, windowed_layers, peer_intra_op_threads(config.decoder.session_options))


def map_external_weights(proto: onnx.ModelProto, folder: str) -> dict:
    """Take the initializers stored in external data files out of PROTO and return them by name, as read-only
    arrays mapped from those files: the OS reads a page when a kernel first touches it, and the weights are
    never copied (reading them into PROTO, then into arrays, would hold the model twice). A tensor whose offset
    is not a multiple of its element size is read into memory instead (numpy's matrix products want aligned
    data), and one whose bytes are not plain elements (4-bit types) is loaded into PROTO by onnx as before."""
    weights, kept = {}, []
    for tensor in proto.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            kept.append(tensor)
            continue
        where = {entry.key: entry.value for entry in tensor.external_data}
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
        shape, count = tuple(tensor.dims), int(np.prod(tensor.dims, dtype=np.int64))
        offset = int(where.get("offset", 0))
        if int(where.get("length", count * dtype.itemsize)) != count * dtype.itemsize or dtype.hasobject:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, folder)
            kept.append(tensor)
            continue
        file = os.path.join(folder, where["location"])
        if offset + count * dtype.itemsize > os.path.getsize(file):
            raise ValueError(f"{where['location']} ends before the {count * dtype.itemsize} bytes of {tensor.name!r} "
                             f"at offset {offset}")
        if count == 0:
            weights[tensor.name] = np.zeros(shape, dtype)
        elif offset % dtype.itemsize:
            weights[tensor.name] = np.fromfile(file, dtype, count, offset=offset).reshape(shape)
        else:
            weights[tensor.name] = np.memmap(file, dtype, "r", offset, (count,)).reshape(shape)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return weights


class DecoderState(CachedState):
    """One generator's model inputs and per-layer caches; `run` feeds new tokens and returns their logits."""

    def __init__(self, graph: Graph, config, batch_size: int, num_beams: int, max_length: int, share_buffer: bool):
        super().__init__(graph, config, batch_size, num_beams, share_buffer)
        specs = layer_caches(config, graph, batch_size * num_beams, max_length, share_buffer, "cpu")
        self.caches = [layer_cache(spec) for spec in specs]
        self.outputs = {}           # the last run's outputs, by name, for get_output
        self.inputs = {}            # the last run's inputs, by name, for get_input
        self.extra_inputs = {}      # further inputs by name, set by the api: set_model_input and adapters

    def run(self, input_ids: np.ndarray) -> np.ndarray:
        """Run the decoder on INPUT_IDS [R, S]; return the logits at each row's last real token, [R, V]."""
        feeds = self.position_feeds(input_ids)
        for cache in self.caches:
            feeds.update(cache.feeds())
        feeds.update(self.extra_inputs)
        self.inputs = self.graph.typed(feeds)
        self.log_inputs(self.inputs)
        self.outputs = self.graph.run(self.inputs)
        self.log_outputs(self.outputs)
        for cache in self.caches:
            cache.update(self.outputs)
        logits = self.outputs[self.config.decoder.output_names["logits"]]                  # [R, S, V]
        return position_inputs.logits_at_last_tokens(logits, input_ids, self.config.pad_token_id)  # [R, V]

    def forget_last_run(self) -> None:
        self.outputs, self.inputs = {}, {}
