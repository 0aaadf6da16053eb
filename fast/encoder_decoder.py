"""An encoder-decoder model (marian-ssru) on onnxruntime: the encoder in an InferenceSession of its own, made
as the decoder's is (gentwin/fast/decoder.py), and the shared state (gentwin/encoder_decoder.py) run
through InferenceSession.run. Side by side with gentwin/reference/encoder_decoder.py."""

from __future__ import annotations

import onnxruntime as ort

from gentwin import model_check
from gentwin.config import ConfigError
from gentwin.encoder_decoder import SsruState
from gentwin.fast.decoder import Graph, execution_providers, session_options
from gentwin.fast.device import Device


def load_encoder(config, provider_config) -> Graph:
    """The encoder in an InferenceSession, once its tensors are checked against genai_config.json."""
    model_check.read_encoder(config)
    providers = execution_providers(provider_config)
    try:
        session = ort.InferenceSession(config.encoder_path, session_options(config.encoder.session_options),
                                       providers=[name for name, _ in providers],
                                       provider_options=[options for _, options in providers])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable or invalid models
        raise ConfigError(f"cannot load {config.encoder_path} in onnxruntime: {error}") from error
    return Graph(session, Device("cpu"), False, False, frozenset())  # its outputs come to the host


class EncoderDecoderState(SsruState):
    def run_graph(self, graph: Graph, feeds: dict) -> dict:
        names = list(graph.output_types)
        return dict(zip(names, graph.session.run(names, feeds)))

    def run(self, input_ids):
        """The logits where the search reads them: on the decoder's device."""
        return self.graph.device.to_device(super().run(input_ids))                            # [R, V]
