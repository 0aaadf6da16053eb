"""The base class of every contrib kernel, and the one way they refuse what they do not implement."""

from onnx.reference.op_run import OpRun


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
    """

    op_domain = "com.microsoft"
    op_schema = None

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


def unsupported(op_type, what, value):
    """The error for an attribute value or input that this reference does not implement."""
    return NotImplementedError(f"{op_type}: {what}={value!r} is not supported by gentwin.reference.")
