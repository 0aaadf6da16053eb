"""The decoder graph as a list of kernel calls, prepared once at load and followed in order at every run.

onnx's ReferenceEvaluator builds a kernel for every node (onnx's own for the standard operators, gentwin's
for the com.microsoft ones: gentwin/reference/ops) and then, at every run, interprets the graph: it checks each
node's inputs by name, logs, and keeps every value until the run ends. `GraphRunner` keeps those kernels and
does the rest once, at load:
- constant folding: a node whose inputs are all initializers, none the default of a graph input (a Constant,
  the Transpose of a tied embedding, the Reshape of a packed weight), runs once, and its outputs become
  initializers, if they are views of its inputs or small (FOLDED_BYTES): a node that would widen a quantized
  weight to float32 (a DequantizeLinear) keeps running at every run, so that the weights stay as compact as
  the file has them;
- the schedule: each remaining node becomes a Step that names the values it reads and writes and the values it
  is the last to read, which the run drops after it, so that a prompt's activations do not pile up;
- Gather (the token embedding) picks rows by numpy indexing, which reads a transposed table where it lies;
  onnx's kernel first copies a non-contiguous table whole (a tied embedding read through a Transpose:
  113 MB copied at every run of SmolLM2-135M).
What each kernel computes is unchanged; only the bookkeeping around it moved to load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from gentwin.reference.ops import CONTRIB_OPS

# A constant node's outputs are kept at load if they take at most this many bytes beyond views of its inputs
FOLDED_BYTES = 2**20
# Operators whose outputs differ from run to run, whatever their inputs: never folded
RANDOM_OPERATORS = {"Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform",
                    "RandomUniformLike"}


class Gather(OpRun):
    """ONNX Gather: the entries of DATA at INDICES along AXIS, by numpy indexing (negative indices count from
    the end). Unlike onnx's kernel it never copies DATA first, so a transposed view is read where it lies."""

    op_domain = ""

    def _run(self, data, indices, axis=0):
        picked = (slice(None),) * (axis % data.ndim) + (indices,)
        return (np.asarray(data[picked]),)  # data.shape[:axis] + indices.shape + data.shape[axis + 1:]


@dataclass(frozen=True)
class Step:
    """One node's kernel, the names of the values it reads and writes, and those it is the last to read."""

    kernel: OpRun
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    last_reads: tuple[str, ...]
    needs_context: bool  # If, Loop and Scan read the values their subgraphs name from the run's values


class GraphRunner:
    """PROTO's nodes as Steps over its initializers and WEIGHTS (arrays by name, held outside PROTO)."""

    def __init__(self, proto: onnx.ModelProto, weights: dict):
        evaluator = ReferenceEvaluator(proto, new_ops=[*CONTRIB_OPS, Gather])
        self.output_names = [value.name for value in proto.graph.output]
        self.constants = {"": None, **evaluator.rt_inits_, **weights}  # "": an omitted optional input
        self.fed_names = {value.name for value in proto.graph.input}  # an initializer named so is a default
        nodes = [(kernel, node_reads(node)) for kernel, node in zip(evaluator.rt_nodes_, proto.graph.node)]
        running = [(kernel, reads) for kernel, reads in nodes if not self._folded(kernel, reads)]
        self.steps = schedule(running, set(self.constants), self.output_names)

    def _folded(self, kernel: OpRun, reads: tuple[str, ...]) -> bool:
        """Run KERNEL now if all it reads is constant and keep its outputs if they are small or views; say so."""
        if kernel.need_context() or kernel.op_type in RANDOM_OPERATORS:
            return False
        if not all(name in self.constants and name not in self.fed_names for name in reads):
            return False
        inputs = [self.constants[name] for name in kernel.input]
        outputs = kernel.run(*inputs)
        arrays = [value for value in inputs if isinstance(value, np.ndarray)]
        new_bytes = sum(value.nbytes for value in outputs if isinstance(value, np.ndarray)
                        and not any(np.may_share_memory(value, array) for array in arrays))
        if new_bytes > FOLDED_BYTES:
            return False
        self.constants.update(zip(kernel.output, outputs))
        return True

    def run(self, feeds: dict) -> list:
        """The graph's outputs, in order, for FEEDS {input name: array}."""
        values = {**self.constants, **feeds}
        for step in self.steps:
            arguments = [values[name] for name in step.inputs]
            if step.needs_context:
                outputs = step.kernel.run(*arguments, context=values)
            else:
                outputs = step.kernel.run(*arguments)
            values.update(zip(step.outputs, outputs))
            for name in step.last_reads:
                del values[name]
        return [values[name] for name in self.output_names]


def node_reads(node: onnx.NodeProto) -> tuple[str, ...]:
    """Every value NODE reads: its inputs and the outer values its subgraphs' nodes name (If, Loop, Scan)."""
    reads = [name for name in node.input if name]
    for attribute in node.attribute:
        for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
            inner = {value.name for value in (*subgraph.input, *subgraph.initializer)}
            for inner_node in subgraph.node:
                reads.extend(name for name in node_reads(inner_node) if name not in inner)
                inner.update(inner_node.output)
    return tuple(dict.fromkeys(reads))


def schedule(nodes: list, constants: set, output_names: list) -> list[Step]:
    """NODES [(kernel, reads)] in graph order as Steps, each dropping the computed values and feeds it is the last
    to read (never a constant, which every run starts from, nor a graph output)."""
    last_reader = {}
    for index, (_, reads) in enumerate(nodes):
        for name in reads:
            last_reader[name] = index
    kept = constants | set(output_names)
    return [
        Step(kernel, tuple(kernel.input), tuple(kernel.output),
             tuple(name for name in reads if last_reader[name] == index and name not in kept),
             kernel.need_context())
        for index, (kernel, reads) in enumerate(nodes)
    ]
