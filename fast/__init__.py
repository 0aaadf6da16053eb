"""gentwin.fast: onnxruntime-genai's generate() API on onnxruntime, with the reference's token streams.

    import gentwin.fast as og   # instead of: import onnxruntime_genai as og

Side by side with gentwin/reference, file for file: decoder.py runs the graph in an onnxruntime
InferenceSession with IO binding, kv_cache.py keeps the cache in buffers allocated once, search.py and
sampling.py choose tokens with vectorised numpy that gives the reference's exact tokens. The API surface,
configuration, tokenizer and option checks are gentwin's shared ones (gentwin/api.py and friends).
"""

from gentwin import api
from gentwin.api import Config, Generator, GeneratorParams
from gentwin.errors import GentwinError
from gentwin.fast import decoder, search
from gentwin.tokenizer import Tokenizer, TokenizerStream


class Model(api.Model):
    __doc__ = api.Model.__doc__
    load_graph = staticmethod(decoder.load_graph)
    DecoderState = decoder.DecoderState
    Search = staticmethod(search.create_search)

    @property
    def device_type(self) -> str:
        return self.graph.device.name


__all__ = ["Config", "GentwinError", "Generator", "GeneratorParams", "Model", "Tokenizer", "TokenizerStream"]
