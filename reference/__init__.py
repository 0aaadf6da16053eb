"""gentwin.reference: onnxruntime-genai's generate() API in pure numpy, the oracle.

    import gentwin.reference as og   # instead of: import onnxruntime_genai as og

No onnxruntime anywhere: the decoder graph runs in onnx's ReferenceEvaluator with gentwin's own numpy
kernels for the com.microsoft operators (gentwin/reference/ops), the KV cache is explicit numpy arrays
(kv_cache.py), and the search is written out (search.py). Execution providers are accepted and ignored:
the reference always runs on the CPU.
"""

from gentwin import api
from gentwin.api import Config, Generator, GeneratorParams
from gentwin.errors import GentwinError
from gentwin.reference import decoder, search
from gentwin.tokenizer import Tokenizer, TokenizerStream


class Model(api.Model):
    __doc__ = api.Model.__doc__
    load_graph = staticmethod(decoder.load_graph)
    DecoderState = decoder.DecoderState
    Search = staticmethod(search.create_search)


__all__ = ["Config", "GentwinError", "Generator", "GeneratorParams", "Model", "Tokenizer", "TokenizerStream"]
