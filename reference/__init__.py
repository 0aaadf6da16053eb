"""gentwin.reference: onnxruntime-genai's generate() API in pure numpy, the oracle.

    import gentwin.reference as og   # instead of: import onnxruntime_genai as og

No onnxruntime anywhere: the decoder graph runs on onnx's reference kernels (onnx.reference) and gentwin's own
numpy kernels for the com.microsoft operators (gentwin/reference/ops), in an order prepared once at load
(graph_runner.py: constants folded, dead values dropped), the KV cache is explicit numpy arrays
(kv_cache.py), and the search is written out (search.py); LoRA adapter files are read by gentwin's own
FlatBuffer reader (gentwin/adapters.py). Execution providers are accepted and ignored: the reference
always runs on the CPU, and is_cuda_available() and the other device checks say False.
"""

from gentwin import api, devices
from gentwin.public import *  # noqa: F403 - the engine-neutral names
from gentwin.engine import (  # noqa: F401 - the Engine's names, in ENGINE_NAMES
    ENGINE_NAMES, Engine, EngineCapabilities, EngineErrorCode, EngineEvent, EngineEventBuffer, EngineEventFlags,
    FinishReason, Request, RequestOptions, TurnOptions, TurnUsage)
from gentwin.public import __all__ as PUBLIC_NAMES
from gentwin.reference import decoder, encoder_decoder, search, speculative


class Model(api.Model):
    __doc__ = api.Model.__doc__
    load_graph = staticmethod(decoder.load_graph)
    DecoderState = decoder.DecoderState
    load_encoder = staticmethod(encoder_decoder.load_encoder)
    EncoderDecoderState = encoder_decoder.EncoderDecoderState
    Search = staticmethod(search.create_search)
    Speculation = speculative.Speculation


# numpy on the CPU: no onnxruntime execution provider is used, so no device is available.
is_cuda_available, is_dml_available, is_openvino_available, is_qnn_available, is_webgpu_available = (
    devices.device_checks(usable_providers=()))

__all__ = [*PUBLIC_NAMES, *ENGINE_NAMES, "Model", *devices.DeviceChecks._fields]
