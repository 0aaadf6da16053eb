"""gentwin.fast: onnxruntime-genai's generate() API on onnxruntime, with the reference's token streams.

    import gentwin.fast as og   # instead of: import onnxruntime_genai as og

Side by side with gentwin/reference, file for file: decoder.py runs the graph in an onnxruntime
InferenceSession with IO binding, kv_cache.py keeps the cache in buffers allocated once (device.py: host
memory, or CUDA memory through CuPy), search.py and sampling.py choose tokens with vectorised numpy that
gives the reference's exact tokens. The API surface, configuration, tokenizer, adapters and option checks
are gentwin's shared ones (gentwin/api.py and friends). Execution providers come from the Config, as in
the peer; the device checks say what this onnxruntime build can run.
"""

import onnxruntime

from gentwin import api, devices
from gentwin.fast import decoder, encoder_decoder, search, speculative
from gentwin.public import *  # noqa: F403 - the engine-neutral names
from gentwin.engine import (  # noqa: F401 - the Engine's names, in ENGINE_NAMES
    ENGINE_NAMES, Engine, EngineCapabilities, EngineErrorCode, EngineEvent, EngineEventBuffer, EngineEventFlags,
    FinishReason, Request, RequestOptions, TurnOptions, TurnUsage)
from gentwin.public import __all__ as PUBLIC_NAMES


class Model(api.Model):
    __doc__ = api.Model.__doc__
    load_graph = staticmethod(decoder.load_graph)
    DecoderState = decoder.DecoderState
    load_encoder = staticmethod(encoder_decoder.load_encoder)
    EncoderDecoderState = encoder_decoder.EncoderDecoderState
    Search = staticmethod(search.create_search)
    Speculation = speculative.Speculation

    @property
    def device_type(self) -> str:
        return self.graph.device.name.upper()  # "CPU" or "CUDA", as the peer says


is_cuda_available, is_dml_available, is_openvino_available, is_qnn_available, is_webgpu_available = (
    devices.device_checks(usable_providers=onnxruntime.get_available_providers()))

__all__ = [*PUBLIC_NAMES, *ENGINE_NAMES, "Model", *devices.DeviceChecks._fields]
