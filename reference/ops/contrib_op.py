"""The base class of every contrib kernel, and the one way they refuse what they do not implement."""

import ml_dtypes
import numpy as np
from onnx import helper
from onnx.reference.op_run import OpRun

HALF_TYPES = (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))


class ContribOp(OpRun):
    """An `OpRun` in onnxruntime's `com.microsoft` domain.

    ReferenceEvaluator stores every value a kernel returns under the matching output name, and it
    keeps None under the empty name "" for the omitted optional inputs of later nodes. A kernel must
    therefore return None (not an array) for an omitted optional output in the middle of its outputs,
    e.g. `mean` of SkipSimplifiedLayerNormalization whose outputs are ("y", "", "", "sum"); the stock
    output check rejects None, so it is relaxed here for exactly those outputs.

    OpRun looks an operator's schema up by class name in the standard ONNX domain, and would then
    pass the default attributes of ONNX's own Attention or RotaryEmbedding to these namesakes;
    `op_schema = None` stops that, so `_run` receives only the attributes the node sets.

    A kernel declares what it implements as data, so that a node it cannot run is refused when the
    model is loaded (`check_node`, called by the load check and again when the evaluator builds the
    kernel), not at the first run: `implemented_values` maps an attribute to the values implemented
    (an absent attribute takes its default, which every kernel implements); `unimplemented_inputs` and
    `unimplemented_outputs` map the index of an optional input or output to its name.

    float16 and bfloat16 inputs are widened to float32 and the kernel's float32 outputs rounded back to
    the input's type, as onnxruntime's CPU kernels compute half-precision tensors in float32; a kernel
    that onnxruntime runs in float32 only sets `widens_half_inputs = False` and refuses them itself.
    """

    op_domain = "com.microsoft"
    op_schema = None
    implemented_values: dict = {}
    unimplemented_inputs: dict = {}
    unimplemented_outputs: dict = {}
    widens_half_inputs = True

    def __init__(self, onnx_node, run_params):
        self.check_node(onnx_node)
        super().__init__(onnx_node, run_params)

    @classmethod
    def check_node(cls, node) -> None:
        """Raise NotImplementedError naming the first attribute value, input or output of NODE that this
        kernel does not implement."""
        attributes = node_attributes(node)
        for name, values in cls.implemented_values.items():
            if name in attributes and attributes[name] not in values:
                raise unsupported(node.op_type, name, attributes[name])
        for names, kind in ((node.input, "input"), (node.output, "output")):
            unimplemented = cls.unimplemented_inputs if kind == "input" else cls.unimplemented_outputs
            for index, name in unimplemented.items():
                if index < len(names) and names[index]:
                    raise unsupported(node.op_type, kind, name)
        cls.check_attributes(node.op_type, attributes)

    @classmethod
    def check_attributes(cls, op_type, attributes) -> None:
        """Refusals that depend on several attributes together; `attributes` maps names to values."""

    def run(self, *args, **kwargs):
        half = next((a.dtype for a in args if isinstance(a, np.ndarray) and a.dtype in HALF_TYPES), None)
        if half is None or not self.widens_half_inputs:
            return super().run(*args, **kwargs)
        widened = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype in HALF_TYPES else a for a in args]
        outputs = super().run(*widened, **kwargs)
        return tuple(o.astype(half) if isinstance(o, np.ndarray) and o.dtype == np.float32 else o for o in outputs)

    def _check_and_fix_outputs(self, res):
        for value, name in zip(res, self.onnx_node.output):
            if value is None and name:
                raise TypeError(f"{self.onnx_node.op_type} returned None for its requested output {name!r}.")
        checked = iter(super()._check_and_fix_outputs(tuple(value for value in res if value is not None)))
        return tuple(None if value is None else next(checked) for value in res)

    def output_requested(self, index):
        """Whether the node names its output `index` (an omitted optional output has the name "")."""
        outputs = self.onnx_node.output
        return index < len(outputs) and outputs[index] != ""

    def outputs(self, *values):
        """The values for the outputs the node declares, None for the omitted ones."""
        return tuple(value if name else None for value, name in zip(values, self.onnx_node.output))


def node_attributes(node) -> dict:
    """A node's attributes by name, strings decoded."""
    values = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
    return {name: value.decode() if isinstance(value, bytes) else value for name, value in values.items()}


def unsupported(op_type, what, value):
    """The error for an attribute value or input that this reference does not implement."""
    return NotImplementedError(f"{op_type}: {what}={value!r} is not supported by gentwin.reference.")
